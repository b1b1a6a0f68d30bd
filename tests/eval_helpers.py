"""A finished run without training: tiny llama + a random (non-identity) LoRA adapter + run.yaml + events.

Eval/export/UI tests use it instead of the real trainer, so they run in seconds and do not depend on it.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.core import atomic
from workbench.core.config import RunConfig, config_to_dict
from workbench.core.events import EventWriter
from workbench.core.runs import RunDir

KOREAN_ROWS = [
    ("부가가치세 신고 기한은 언제인가요?", "과세기간 종료 후 25일 이내에 신고해야 합니다."),
    ("계약 해지 시 위약금은 어떻게 계산하나요?", "민법 제398조에 따른 손해배상액의 예정입니다."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("오늘 회의는 몇 시인가요?", "오후 세 시입니다."),
]


def write_eval_split(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in KOREAN_ROWS]
    for name in ("train", "val", "test"):
        (directory / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return directory


def make_lora_run(workspace, model_dir: Path, run_id: str = "run-eval", method: str = "lora") -> RunDir:
    """A completed run whose adapter changes the model's outputs (random B, not PEFT's zero init)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = RunDir(workspace.run_dir(run_id))
    run.path.mkdir(parents=True)
    data_dir = write_eval_split(run.path.parent.parent / "datasets" / f"{run_id}-data")
    quantization = {"load_in_4bit": True, "bnb_4bit_compute_dtype": "float32"} if method == "qlora" else {}
    config = RunConfig.model_validate({
        "method": method,
        "model": {"name_or_path": str(model_dir)},
        "data": {"path": str(data_dir)},
        "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "o_proj", "down_proj"]},
        "quantization": quantization,
        "training": {"max_length": 128, "per_device_eval_batch_size": 2, "max_steps": 3},
    })
    atomic.write_yaml(run.config_path, config_to_dict(config))

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=config.lora.target_modules, init_lora_weights=False,
                      task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    with torch.no_grad():  # make the adapter's effect clearly visible in the logits of a random tiny model
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)
    model.save_pretrained(run.adapter_path)

    with EventWriter(run.events_path) as events:
        events.emit("start", run_id=run_id, method=method, total_steps=3)
        for step, loss in ((1, 5.9), (2, 5.1), (3, 4.2)):
            events.emit("step", step=step, total_steps=3, loss=loss, lr=1e-3)
        events.emit("eval", step=3, eval_loss=4.5, perplexity=90.0)
        events.emit("end", status="completed", step=3, adapter_path=str(run.adapter_path))
    run.write_status("completed", pid=None, created=1.0)
    return run
