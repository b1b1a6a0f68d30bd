"""Run config -> a ready TRL SFTTrainer with PEFT, events and control callbacks."""

from __future__ import annotations

import os

import torch

from workbench.core.config import RunConfig
from workbench.core.errors import UserError
from workbench.core.memory import may_store_frozen_linears_in_16_bits
from workbench.core.workspace import Workspace
from workbench.engine.callbacks import ControlCallback, EventCallback
from workbench.engine.control import RunControl
from workbench.engine.models import compute_dtype, count_parameters, describe_device, load_for_config
from workbench.engine.lm_head import log_probs_on_cpu_first, score_labelled_positions_only
from workbench.engine.lora import lora_config, store_frozen_linears_in
from workbench.engine.lora_cpu import use_cheap_lora_dropout, use_fused_lora_forward
from workbench.engine.packing import model_masks_packed_sequences, padding_free_collator, use_per_example_attention
from workbench.engine.seq2seq import build_seq2seq_trainer, load_pairs
from workbench.engine.sft_data import load_split


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            return set(next((line.split() for line in handle if line.startswith("flags")), []))
    except OSError:
        return set()


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: without either, bf16 autocast on the CPU is slower than fp32."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def resolve_precision(config: RunConfig) -> str:
    """'bf16' | 'fp16' | 'fp32' for autocast: bf16 where the hardware computes it natively, fp16 on older GPUs."""
    precision = config.training.precision
    if precision == "auto" and config.distributed.mixed_precision != "auto":
        precision = {"no": "fp32"}.get(config.distributed.mixed_precision, config.distributed.mixed_precision)
    if precision != "auto":
        if precision == "fp16" and not torch.cuda.is_available():
            raise UserError("training.precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def resolve_gradient_checkpointing(config: RunConfig, model) -> bool:
    """`auto`: recompute activations only when the memory estimate says the run would not fit without it
    (on the CPU never: it only costs time there)."""
    from workbench.core.memory import needs_gradient_checkpointing

    gpu_memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory \
        if torch.cuda.is_available() else None
    return needs_gradient_checkpointing(config, model.config.to_dict(), gpu_memory)


def sft_config(config: RunConfig, output_dir: str, precision: str, has_eval: bool, checkpointing: bool):
    from trl import SFTConfig

    t = config.training
    eval_strategy = t.eval_strategy if has_eval else "no"
    return SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        max_length=t.max_length,
        completion_only_loss=t.completion_only_loss,
        # TRL's own padding_free flag refuses max_length without packing; build_trainer passes the
        # padding-free collator itself so TRL still truncates to max_length.
        padding_free=False,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        load_best_model_at_end=t.load_best_model_at_end and eval_strategy != "no",
        metric_for_best_model=t.metric_for_best_model,
        greater_is_better=False if t.metric_for_best_model.endswith("loss") else None,
        dataloader_num_workers=t.dataloader_num_workers,
        torch_compile=t.torch_compile,
        use_liger_kernel=t.use_liger_kernel,
        seed=t.seed,
        data_seed=t.seed,
        report_to=["tensorboard"] if t.report_to_tensorboard else "none",
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        save_only_model=False,
        dataset_num_proc=None,
    )


def build_causal_trainer(config: RunConfig, model, tokenizer, args, train, evaluation, callbacks, log):
    """TRL's SFTTrainer with padding-free batches and the compact LM head where they apply, a line describing
    that layout for the log, and whether batches are padding-free."""
    from trl import SFTTrainer

    padding_free = config.training.padding_free and model_masks_packed_sequences(model)
    per_example_attention = padding_free and use_per_example_attention(model, log)
    # A per-shape compiler would recompile for every count of labelled positions.
    compact_head = not config.training.torch_compile and score_labelled_positions_only(log)
    cpu_head = compact_head and not torch.cuda.is_available() and log_probs_on_cpu_first(log)
    trainer = SFTTrainer(
        model=model,
        args=args,
        data_collator=padding_free_collator(tokenizer.pad_token_id) if padding_free else None,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=callbacks,
    )
    if len(trainer.train_dataset) == 0:  # TRL drops rows whose every label was cut off by max_length
        raise UserError(f"{config.data.path}: at training.max_length {config.training.max_length} no training row "
                        f"keeps any answer token (the prompts, tool definitions included, are longer); raise "
                        f"training.max_length ('data inspect FILE --model M' shows the lengths)")
    dropped = len(train) - len(trainer.train_dataset)
    if dropped:
        log(f"{dropped} of {len(train)} training rows lost every answer token to training.max_length and were dropped")
    layout = (f"padding-free {'on' if padding_free else 'off'}"
              f"{' (per-example attention)' if per_example_attention else ''}, "
              f"LM head on {'labelled positions only' if compact_head else 'every position'}"
              f"{' (whole-row CPU kernels)' if cpu_head else ''}")
    return trainer, layout, padding_free


def load_parent_adapter(model, adapter_dir: str) -> None:
    """The parent adapter's weights into the freshly wrapped PEFT model, still trainable (PEFT's own loader
    and setter). core/lineage.py refused a different shape before the run existed; a file that still does
    not fit (edited since) is named here instead of training a half-loaded adapter."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    weights = load_peft_weights(adapter_dir, device="cpu")
    try:
        result = set_peft_model_state_dict(model, weights, adapter_name="default")
    except RuntimeError as error:  # a size mismatch
        raise UserError(f"--init-adapter {adapter_dir}: its weights do not fit this run's LoRA: "
                        f"{str(error).splitlines()[-1].strip()[:200]}") from None
    own = [key for key in result.missing_keys if "lora_" in key or "modules_to_save" in key]
    if result.unexpected_keys or own:
        names = (result.unexpected_keys or own)[:2]
        raise UserError(f"--init-adapter {adapter_dir}: {len(result.unexpected_keys)} unexpected and {len(own)} "
                        f"missing adapter weights (e.g. {', '.join(names)}): not this run's LoRA shape")


def build_trainer(config: RunConfig, workspace: Workspace, session: RunControl):
    from transformers import EarlyStoppingCallback, set_seed

    run = session.run
    if config.training.report_to_tensorboard:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.tensorboard_path)

    def log(message: str) -> None:
        session.emit("log", level="info", message=message)

    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        # One GPU per process, chosen before the model loads: the 4-bit path places it on the current device.
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    precision = resolve_precision(config)
    dtype = compute_dtype(config.quantization.bnb_4bit_compute_dtype) if config.method in ("qlora", "qdora") else None
    log(f"loading {config.model.name_or_path}")
    model, tokenizer, _ = load_for_config(config, workspace, log=log, dtype=dtype,
                                          on_download=lambda event: session.emit("download", **event))
    seq2seq = config.task == "seq2seq"
    if bool(getattr(model.config, "is_encoder_decoder", False)) != seq2seq:
        kind = "encoder-decoder" if not seq2seq else "decoder-only"
        raise UserError(f"model {config.model.name_or_path!r} is {kind}, but the run's task is {config.task}; "
                        f"choose a preset of the model's family (presets list --model M)")
    if seq2seq:
        train, evaluation = (load_pairs(config, name, tokenizer) for name in (config.data.train_file,
                                                                               config.data.val_file))
    else:
        train, evaluation = (load_split(config.data, name, tokenizer, log) for name in (config.data.train_file,
                                                                                          config.data.val_file))
    if train is None:
        raise UserError(f"{config.data.path}/{config.data.train_file}: training split is missing or empty")
    checkpointing = resolve_gradient_checkpointing(config, model)
    args = sft_config(config, str(run.checkpoints_path), precision, evaluation is not None, checkpointing)
    callbacks = []
    if config.training.early_stopping_patience and evaluation is not None:
        callbacks.append(EarlyStoppingCallback(config.training.early_stopping_patience,
                                               config.training.early_stopping_threshold))
    # The adapter's random initialisation happens while the trainer is built: seed it, or two runs of one
    # config start from different adapters (the Trainer seeds only after the model is wrapped).
    set_seed(config.training.seed)
    if seq2seq:
        trainer, layout = build_seq2seq_trainer(config, model, tokenizer, args, train, evaluation, callbacks)
        padding_free = False  # dynamic padding: encoder-decoder batches are not concatenated
    else:
        trainer, layout, padding_free = build_causal_trainer(config, model, tokenizer, args, train, evaluation,
                                                             callbacks, log)
    if precision in ("bf16", "fp16") and may_store_frozen_linears_in_16_bits(config):
        stored = store_frozen_linears_in(trainer.model, torch.bfloat16 if precision == "bf16" else torch.float16)
        if stored:
            layout += f", {stored} frozen layers stored in {precision}"
    if use_cheap_lora_dropout(trainer.model):
        layout += ", LoRA dropout masks from 16-bit random slices"
    if use_fused_lora_forward(trainer.model):
        layout += ", LoRA scales folded into addmm"
    if config.parent is not None and session.resume_from is None:  # a resumed run's checkpoint holds its weights
        load_parent_adapter(trainer.model, config.parent.adapter_path)
        log(f"continuing from the adapter {config.parent.adapter_path}"
            f"{f' of run {config.parent.run_id}' if config.parent.run_id else ''} (fresh optimizer and LR schedule)")
    log(f"precision {precision}, gradient checkpointing {'on' if checkpointing else 'off'}, {layout}, "
        f"{len(train)} training rows")
    trainable, total = count_parameters(trainer.model)
    # On every rank: its step logging gathers each GPU's VRAM, a collective all ranks must join.
    trainer.add_callback(EventCallback(run, session.writer, {
        "run_id": run.run_id, "pid": os.getpid(), "model": config.model.name_or_path, "method": config.method,
        "device": describe_device(), "trainable_params": trainable, "all_params": total, "precision": precision,
        "world_size": args.world_size, "attention": trainer.model.config._attn_implementation,
        "liger_kernel": args.use_liger_kernel, "gradient_checkpointing": checkpointing, "padding_free": padding_free,
        "resumed_from_step": int(session.resume_from.name.rsplit("-", 1)[1]) if session.resume_from else None,
        "parent_run": config.parent.run_id if config.parent else None,
        "init_adapter": config.parent.adapter_path if config.parent else None,
    }))
    trainer.add_callback(ControlCallback(run, session.writer, session))
    return trainer
