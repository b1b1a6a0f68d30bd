"""Benchmark (not a test): workbench trainer vs a plain TRL SFTTrainer script, same model, data and steps.

    .venv/bin/python benchmarks/train_throughput.py [--examples 128] [--batch 8] [--max-length 256]
        [--model smollm2-135m] [--workspace DIR] [--only baseline,workbench,workbench-quiet,llamafactory]
        [--llamafactory-python PATH] [--set KEY=VALUE ...] [--trl-defaults] [--baseline-precision P]
        [--repeats N]

Data: the bundled demo rows (short and long Korean/English instructions, so lengths vary), one epoch of
--examples rows, evaluated on 32 held-out rows afterwards. Each trainer runs in its own process:
  baseline         plain TRL SFTTrainer at its best for this device: no gradient checkpointing (the run fits
                   in memory), the precision that is fastest here (bf16 autocast on GPUs and on CPUs with
                   AMX/AVX512-BF16, fp32 on other CPUs, where bf16 autocast is ~50x slower;
                   --baseline-precision to check), flash-attention 2 with padding-free batches / Liger
                   kernels where installed; otherwise SFTConfig's defaults (padded batches, per-step
                   entropy/accuracy). Only the LoRA and the learning-rate schedule are set to the workbench
                   preset's, so the losses are comparable. --trl-defaults keeps TRL's gradient checkpointing.
  workbench        `llama-lora` preset through workbench.engine.build, with the event stream and control
                   callbacks (what `lora-workbench train` runs).
  workbench-quiet  the same without the event and control callbacks: the monitoring overhead.
  llamafactory     LLaMA-Factory's `sft` stage at its best for this device, like the baseline:
                   `disable_gradient_checkpointing`, the baseline's precision (`bf16` + `use_cpu` on the CPU:
                   fp32 weights under bf16 autocast, its `pure_bf16` being GPU-only), `flash_attn: fa2` /
                   `enable_liger_kernel` where installed (its CPU has neither, nor any of its `use_v1_kernels`).
                   Not used: `packing` / `neat_packing`, which put several examples in one row and so change the
                   examples per step (its only padding-free path). Its `smollm2` template (the same ChatML and
                   default system prompt), the same LoRA, schedule, batch and steps. It runs in LLaMA-Factory's
                   own virtual environment (its pins clash with ours; scripts/setup-llamafactory DIR makes one):
                   --llamafactory-python, else the interpreter of `llamafactory-cli` on PATH; skipped when
                   neither exists.
Samples/s and non-padding tokens/s are timed from the end of the first step to the end of the last
(the first step pays one-off allocation). MFU: model FLOPs per second (core.selftest's count, the same for
every trainer) over the best of a 2048³ matmul probe in the training precision, run in the same process just
before training. --repeats N runs every trainer N times, alternating, and reports the medians with the load
average around each run (a shared machine's timings are noisy). Each line ends with the settings the trainer
used and the dtype its first linear layer's output had in the first forward (bf16 under autocast); then the
ratios (samples/s, tokens/s, MFU, eval loss) workbench / TRL, workbench / LLaMA-Factory and LLaMA-Factory /
TRL, for the trainers run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EVAL_ROWS = 32
VARIANTS = ("baseline", "workbench", "workbench-quiet", "llamafactory")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PRESET = "llama-lora"


def preset_schedule() -> dict:
    """The workbench preset's learning rate and schedule, which every trainer here uses."""
    from workbench.core.presets import load_preset

    training = load_preset(PRESET, None).data["training"]
    return {key: training[key] for key in ("learning_rate", "lr_scheduler_type", "warmup_steps")}


def write_dataset(directory: Path, examples: int) -> Path:
    from workbench.core.data.demo import DEMO_FILE

    demo = [json.loads(line) for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [{"messages": demo[i % len(demo)]["messages"]} for i in range(examples + EVAL_ROWS)]
    directory.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.jsonl", rows[:examples]), ("val.jsonl", rows[examples:])):
        with open(directory / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in part)
    return directory


class StepClock:
    """A TrainerCallback recording the wall time at the end of every optimizer step, the training rows'
    lengths, the train losses, the eval loss, the model and the dtype its matmuls ran in (also where the
    trainer object is out of reach)."""

    def __new__(cls):
        import torch
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self):
                self.ends: list[float] = []
                self.lengths: list[int] = []
                self.train_losses: list[float] = []
                self.eval_loss: float | None = None
                self.model = None
                self.matmul_dtype: str | None = None

            def on_train_begin(self, args, state, control, train_dataloader=None, model=None, **kwargs):
                self.lengths = [len(ids) for ids in train_dataloader.dataset["input_ids"]]
                self.model = model
                # The first linear layer's output dtype in the first forward: what the matmuls really ran in
                # (under autocast, not the weights' dtype).
                linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
                self._hook = linear.register_forward_hook(self._record_dtype)

            def _record_dtype(self, module, inputs, output):
                self.matmul_dtype = str(output.dtype).removeprefix("torch.")
                self._hook.remove()

            def on_step_end(self, args, state, control, **kwargs):
                self.ends.append(time.perf_counter())

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    self.train_losses.append(float(logs["loss"]))

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                self.eval_loss = metrics["eval_loss"]

        return _Clock()


def timing(clock, batch: int, total_s: float) -> dict:
    steps = len(clock.ends)
    timed_s = clock.ends[-1] - clock.ends[0]
    # The sampler shuffles, so the steps' own token counts are unknown; over the whole epoch the mean is exact.
    mean_length = sum(clock.lengths) / len(clock.lengths)
    timed_examples = (steps - 1) * batch
    return {
        "steps": steps,
        "train_s": round(total_s, 2),
        "samples_per_s": timed_examples / timed_s,
        "tokens_per_s": timed_examples * mean_length / timed_s,
        "mean_length": mean_length,
        "final_train_loss": clock.train_losses[-1] if clock.train_losses else None,
        "eval_loss": clock.eval_loss,
        "matmul_dtype": clock.matmul_dtype,
    }


def probe_tflops(precision: str) -> float:
    """This process's matmul peak in the precision it trains in (autocast bf16 multiplies in bf16)."""
    from workbench.engine.selftest import matmul_tflops

    return matmul_tflops("bf16" if precision == "bf16" else "fp32", 2048, 3)


def add_mfu(result: dict, model_dir: str, trainable_params: int, peak_tflops: float) -> dict:
    from workbench.core.family import read_config_json
    from workbench.core.memory import shape_from_config
    from workbench.core.selftest import training_flops_per_token

    shape = shape_from_config(read_config_json(Path(model_dir)))
    flops = training_flops_per_token(shape, round(result["mean_length"]), trainable_params)
    result["peak_tflops"] = peak_tflops
    result["mfu"] = result["tokens_per_s"] * flops / (peak_tflops * 1e12)
    return result


def measure(trainer, batch: int) -> dict:
    clock = StepClock()
    trainer.add_callback(clock)
    started = time.perf_counter()
    trainer.train()
    result = timing(clock, batch, time.perf_counter() - started)
    trainer.evaluate()
    result["eval_loss"] = clock.eval_loss
    return result


def peer_precision(args) -> str:
    """The precision the baseline and LLaMA-Factory train in: --baseline-precision, or the fastest here."""
    import torch

    from workbench.engine.build import cpu_has_fast_bf16

    if args.baseline_precision != "auto":
        return args.baseline_precision
    return "bf16" if torch.cuda.is_available() or cpu_has_fast_bf16() else "fp32"


def run_baseline(args, data_dir: Path, output_dir: Path) -> dict:
    """The plain TRL script: SFTConfig defaults except batch, length, steps, LoRA and schedule."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from workbench.core.workspace import Workspace
    from workbench.engine.models import resolve_and_materialize
    from workbench.engine.sft_data import to_prompt_completion

    import importlib.util

    source = resolve_and_materialize(args.model, Workspace.resolve(args.workspace), log=lambda _: None)
    tokenizer = AutoTokenizer.from_pretrained(source)
    best = not args.trl_defaults
    flash = best and importlib.util.find_spec("flash_attn") is not None
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, **({"attn_implementation": "flash_attention_2"} if flash else {}))
    tuned = {}
    if best:
        tuned = {"gradient_checkpointing": False, "padding_free": flash,
                 "use_liger_kernel": importlib.util.find_spec("liger_kernel") is not None}
    precision = peer_precision(args)
    splits = load_dataset("json", data_files={"train": str(data_dir / "train.jsonl"),
                                              "val": str(data_dir / "val.jsonl")})
    splits = splits.map(to_prompt_completion, remove_columns=["messages"])
    config = SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=args.batch,
        max_length=args.max_length,
        max_steps=args.examples // args.batch,
        **preset_schedule(),
        use_cpu=not torch.cuda.is_available(),
        bf16=precision == "bf16",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,  # so the last step's loss is in the log history, as the workbench's
        report_to="none",
        disable_tqdm=True,
        seed=42,
        **tuned,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules=LORA_TARGETS)
    trainer = SFTTrainer(model=model, args=config, train_dataset=splits["train"], eval_dataset=splits["val"],
                         processing_class=tokenizer, peft_config=lora)
    peak = probe_tflops(precision)
    result = measure(trainer, args.batch)
    result["settings"] = (f"bf16={config.bf16} checkpointing={config.gradient_checkpointing} "
                          f"padding_free={config.padding_free} liger={config.use_liger_kernel}")
    return add_mfu(result, source, trainer.model.get_nb_trainable_parameters()[0], peak)


def run_workbench(args, data_dir: Path, quiet: bool) -> dict:
    from workbench.core.newrun import create_run, resolve_config
    from workbench.core.workspace import Workspace
    from workbench.engine.build import build_trainer, resolve_precision
    from workbench.engine.callbacks import ControlCallback, EventCallback
    from workbench.engine.session import TrainingSession

    workspace = Workspace.resolve(args.workspace)
    overrides = [
        f"training.per_device_train_batch_size={args.batch}",
        f"training.per_device_eval_batch_size={args.batch}",
        f"training.max_length={args.max_length}",
        "training.save_strategy=no",
        "training.eval_strategy=no",
        "training.report_to_tensorboard=false",
        *args.set,
    ]
    config = resolve_config(workspace, PRESET, str(data_dir), args.model, overrides, args.examples // args.batch)
    run = create_run(workspace, config)
    session = TrainingSession(run)
    trainer = build_trainer(config, workspace, session)
    if quiet:
        for callback in list(trainer.callback_handler.callbacks):
            if isinstance(callback, (EventCallback, ControlCallback)):
                trainer.remove_callback(callback)
    peak = probe_tflops(resolve_precision(config))
    result = measure(trainer, args.batch)
    t = config.training
    result["settings"] = (f"precision={resolve_precision(config)} checkpointing={trainer.args.gradient_checkpointing} "
                          f"padding_free={t.padding_free}")
    shutil.rmtree(run.path, ignore_errors=True)
    return add_mfu(result, args.model_dir, trainer.model.get_nb_trainable_parameters()[0], peak)


def run_llamafactory(args, data_dir: Path, output_dir: Path) -> dict:
    """LLaMA-Factory's own training entry (what `llamafactory-cli train` runs), in its virtual environment,
    at its best for this device (see the module's docstring)."""
    import importlib.machinery
    import importlib.util
    import types

    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):
        # Its multimodal plugin imports torchaudio at import time; no CPU torchaudio for this torch is on the
        # package index (its wheels fail to load against it), and text-only SFT never calls it.
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub
    import torch
    from llamafactory.train.tuner import run_exp

    columns = {"formatting": "sharegpt", "columns": {"messages": "messages"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                        "assistant_tag": "assistant", "system_tag": "system"}}
    (data_dir / "dataset_info.json").write_text(json.dumps({
        "bench_train": {"file_name": "train.jsonl", **columns}, "bench_val": {"file_name": "val.jsonl", **columns}}))
    precision = peer_precision(args)
    best = {"disable_gradient_checkpointing": True, "bf16": precision == "bf16",
            "use_cpu": not torch.cuda.is_available(),
            "flash_attn": "fa2" if importlib.util.find_spec("flash_attn") else "auto",
            "enable_liger_kernel": importlib.util.find_spec("liger_kernel") is not None}
    clock = StepClock()
    peak = probe_tflops(precision)
    started = time.perf_counter()
    run_exp(args={
        "stage": "sft", "do_train": True, "do_eval": True, "model_name_or_path": args.model_dir,
        "finetuning_type": "lora", "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05,
        "lora_target": ",".join(LORA_TARGETS), "dataset": "bench_train", "eval_dataset": "bench_val",
        "dataset_dir": str(data_dir), "template": "smollm2", "cutoff_len": args.max_length,
        "output_dir": str(output_dir), "per_device_train_batch_size": args.batch,
        "per_device_eval_batch_size": args.batch, "max_steps": args.examples // args.batch,
        **preset_schedule(), "logging_steps": 1,
        "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "disable_tqdm": True, "seed": 42,
        "overwrite_cache": True, "overwrite_output_dir": True, "plot_loss": False, **best,
    }, callbacks=[clock])
    # run_exp evaluates after training: the timing ends at the last step, as for the others.
    result = timing(clock, args.batch, clock.ends[-1] - started)
    model = clock.model
    result["settings"] = (f"bf16={best['bf16']} weights={next(model.parameters()).dtype} "
                          f"checkpointing={model.is_gradient_checkpointing} flash_attn={best['flash_attn']} "
                          f"liger={best['enable_liger_kernel']} padded batches, no packing")
    return add_mfu(result, args.model_dir, model.get_nb_trainable_parameters()[0], peak)


def worker(args) -> int:
    data_dir = Path(args.data_dir)
    if args.worker == "llamafactory":
        result = run_llamafactory(args, data_dir, Path(args.scratch))
    elif args.worker == "baseline":
        result = run_baseline(args, data_dir, Path(args.scratch))
    else:
        result = run_workbench(args, data_dir, quiet=args.worker == "workbench-quiet")
    print("RESULT " + json.dumps(result))
    return 0


def llamafactory_python(explicit: str | None) -> str | None:
    """The interpreter of LLaMA-Factory's virtual environment: given, or read from `llamafactory-cli`'s shebang."""
    if explicit:
        return explicit
    cli = shutil.which("llamafactory-cli")
    if cli is None:
        return None
    first_line = Path(cli).read_text(encoding="utf-8", errors="replace").splitlines()[0]
    return first_line[2:].strip() if first_line.startswith("#!") else None


def spawn(args, variant: str, data_dir: Path, scratch: Path) -> dict:
    python = args.llamafactory_python if variant == "llamafactory" else sys.executable
    command = [python, __file__, "--worker", variant, "--data-dir", str(data_dir), "--scratch", str(scratch),
               "--examples", str(args.examples), "--batch", str(args.batch), "--max-length", str(args.max_length),
               "--model", args.model, "--model-dir", args.model_dir, "--workspace", str(args.workspace)]
    for item in args.set:
        command += ["--set", item]
    if args.trl_defaults:
        command.append("--trl-defaults")
    command += ["--baseline-precision", args.baseline_precision]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def precision_flags() -> str:
    """The CPU's vector and matrix extensions that decide the precision."""
    from workbench.engine.build import cpu_flags

    return " ".join(sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})) or "none"


def median_run(runs: list[dict]) -> dict:
    """The run with the median samples/s (its other figures come with it)."""
    return sorted(runs, key=lambda r: r["samples_per_s"])[len(runs) // 2]


def ratio_text(ours: dict, peer: dict) -> str:
    loss_gap = 100 * (ours["eval_loss"] / peer["eval_loss"] - 1)
    return (f"{ours['samples_per_s'] / peer['samples_per_s']:.2f}x samples/s, "
            f"{ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x tokens/s, MFU {100 * ours['mfu']:.1f}% vs "
            f"{100 * peer['mfu']:.1f}%, eval loss {loss_gap:+.2f}% ({'within' if abs(loss_gap) <= 2 else 'NOT within'} 2%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--only", default=",".join(VARIANTS))
    parser.add_argument("--set", action="append", default=[], help="extra workbench override, KEY=VALUE")
    parser.add_argument("--llamafactory-python", help="python of a virtual environment with llamafactory installed")
    parser.add_argument("--trl-defaults", action="store_true",
                        help="the baseline with TRL's default gradient checkpointing (not at its best)")
    parser.add_argument("--baseline-precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="the baseline's and LLaMA-Factory's precision (auto: the fastest here, see above)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every trainer, alternating")
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import tempfile

    from workbench.core.workspace import Workspace
    from workbench.engine.models import resolve_and_materialize

    args.workspace = Workspace.resolve(args.workspace).root
    args.model_dir = resolve_and_materialize(args.model, Workspace(args.workspace))  # convert once, untimed
    args.llamafactory_python = llamafactory_python(args.llamafactory_python)
    variants = [v for v in args.only.split(",") if v != "llamafactory" or args.llamafactory_python]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = write_dataset(Path(tmp) / "data", args.examples)
        print(f"{args.examples} examples, batch {args.batch}, max_length {args.max_length}, {args.model}, "
              f"{os.cpu_count()} CPUs, flags: {precision_flags()}")
        runs: dict[str, list[dict]] = {variant: [] for variant in variants}
        for repeat in range(args.repeats):
            for variant in variants if repeat % 2 == 0 else variants[::-1]:
                load_before = os.getloadavg()[0]
                r = spawn(args, variant, data_dir, Path(tmp) / variant)
                runs[variant].append(r)
                print(f"{variant:16} {r['samples_per_s']:6.3f} samples/s {r['tokens_per_s']:8.1f} tokens/s  "
                      f"MFU {100 * r['mfu']:4.1f}% of {r['peak_tflops']:.3f} TFLOP/s  "
                      f"train loss {r['final_train_loss'] or float('nan'):.4f}  eval loss {r['eval_loss']:.4f}  "
                      f"load {load_before:.1f}->{os.getloadavg()[0]:.1f}  ({r['settings']}; "
                      f"matmuls in {r['matmul_dtype']})",
                      flush=True)
        results = {variant: median_run(done) for variant, done in runs.items() if done}
    trl = "TRL at its defaults" if args.trl_defaults else "TRL at its best"
    for ours, peer, label in (("workbench", "baseline", f"workbench / {trl}"),
                              ("workbench", "llamafactory", "workbench / LLaMA-Factory at its best"),
                              ("llamafactory", "baseline", f"LLaMA-Factory at its best / {trl}")):
        if ours in results and peer in results:
            print(f"{label} (medians of {args.repeats}): {ratio_text(results[ours], results[peer])}")
    if "workbench" in results and "workbench-quiet" in results:
        on, off = results["workbench"]["samples_per_s"], results["workbench-quiet"]["samples_per_s"]
        print(f"monitoring overhead: {100 * (off / on - 1):+.2f}% (events on {on:.3f}, off {off:.3f} samples/s)")
    if "llamafactory" in args.only.split(",") and not args.llamafactory_python:
        print("LLaMA-Factory: not installed (no --llamafactory-python, no llamafactory-cli on PATH); skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
