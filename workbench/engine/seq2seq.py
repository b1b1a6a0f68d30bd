"""Encoder-decoder runs (BART/KoBART, T5/mT5): prepared rows -> source/target pairs, the Seq2SeqTrainer.

The encoder reads the prompt as plain text (core.seq2seq.source_text). The decoder learns the answer;
the loss covers the answer tokens only. Batches are padded dynamically (DataCollatorForSeq2Seq); the
source and the target each have their own cutoff (training.max_source_length / max_target_length).
"""

from __future__ import annotations

from workbench.core.config import RunConfig
from workbench.core.errors import UserError
from workbench.core.seq2seq import source_text
from workbench.engine.sft_data import read_rows, row_messages


def cutoffs(config: RunConfig) -> tuple[int, int]:
    t = config.training
    return t.max_source_length or t.max_length, t.max_target_length or t.max_length


def encode_pair(tokenizer, source: str, target: str, max_source: int, max_target: int) -> dict[str, list[int]]:
    """Source ids (with the tokenizer's special tokens) and target ids ending in EOS, so the decoder learns
    to stop (BART's and T5's tokenizers add it themselves; a tokenizer that does not gets it appended)."""
    encoded = tokenizer(source, max_length=max_source, truncation=True)
    labels = tokenizer(text_target=target, max_length=max_target, truncation=True)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and (not labels or labels[-1] != eos):
        labels = labels[: max_target - 1] + [eos]
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}


def load_pairs(config: RunConfig, file_name: str | None, tokenizer):
    """A tokenized source/target Dataset of a split, or None when it is absent or empty."""
    from pathlib import Path

    data = config.data
    if not file_name or not data.path:
        return None
    path = Path(data.path) / file_name
    if not path.is_file() or path.stat().st_size == 0:
        return None
    from datasets import Dataset

    max_source, max_target = cutoffs(config)
    pairs = []
    for number, row in enumerate(read_rows(path), start=1):
        messages = row_messages(row, data.system_prompt)
        if len(messages) < 2:
            raise UserError(f"{path} line {number}: a seq2seq row needs a prompt before the answer")
        pairs.append(encode_pair(tokenizer, source_text(messages, config.family), messages[-1].content, max_source,
                                 max_target))
    return Dataset.from_list(pairs)


def build_seq2seq_trainer(config: RunConfig, model, tokenizer, args, train, evaluation, callbacks):
    """A transformers Trainer over the LoRA-wrapped encoder-decoder model (the model computes the loss on
    the labels; padded label positions are -100), and a line describing it for the log."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import DataCollatorForSeq2Seq, Trainer

    from workbench.engine.lora import lora_config

    if config.method in ("qlora", "qdora"):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    model = get_peft_model(model, lora_config(config))
    max_source, max_target = cutoffs(config)
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    return trainer, f"seq2seq: source cut at {max_source} tokens, target at {max_target}"
