"""A stand-in for `python -m workbench.engine.trainer`: writes docs/DESIGN.md events at a chosen rate and
honors control.json (stop / pause / resume) like the real trainer, without torch.

    python tests/fake_trainer.py RUN_DIR [--steps N] [--rate EVENTS_PER_S] [--fail-at STEP] [--hold]
                                 [--resume-from CHECKPOINT_DIR]

Also importable: `write_history()` writes a finished run's events with fixed times (for snapshots).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.core.events import EventWriter  # noqa: E402
from workbench.core.runs import CHECKPOINT_MARKER, RunDir  # noqa: E402

MODEL = "tiny-llama"


def step_fields(step: int, total: int) -> dict:
    """Plausible, deterministic numbers: a decaying loss, a cosine LR, slowly growing memory."""
    return {
        "step": step,
        "total_steps": total,
        "epoch": round(step / max(total, 1), 4),
        "loss": round(2.0 * math.exp(-step / 40) + 0.5 + 0.05 * math.sin(step), 4),
        "grad_norm": round(1.0 + 0.5 * math.cos(step / 3), 4),
        "lr": 2e-4 * 0.5 * (1 + math.cos(math.pi * step / max(total, 1))),
        "tokens_per_s": 1000.0 + 10 * (step % 7),
        "vram_allocated_mb": 1500.0 + step,
        "vram_reserved_mb": 2000.0 + step,
        "vram_peak_mb": 2100.0 + step,
        "gpu_util": None,
        "ram_mb": 3000.0,
        "eta_s": float(total - step),
    }


def eval_loss(step: int) -> float:
    return round(1.8 * math.exp(-step / 50) + 0.6, 4)


def write_history(run: RunDir, steps: int, total: int | None = None, start_time: float = 1_700_000_000.0,
                  status: str = "completed", error: str | None = None, eval_every: int = 10) -> None:
    """A whole run's events.jsonl with fixed times (one second per step) and its final status.json."""
    total = total or steps
    events = [{"type": "start", "time": start_time, "run_id": run.run_id, "pid": None, "model": MODEL,
               "method": "lora", "device": "cpu", "total_steps": total, "trainable_params": 1024,
               "all_params": 100_000}]
    for step in range(1, steps + 1):
        events.append({"type": "step", "time": start_time + step, **step_fields(step, total)})
        if step % eval_every == 0:
            events.append({"type": "eval", "time": start_time + step, "step": step, "eval_loss": eval_loss(step),
                           "perplexity": math.exp(eval_loss(step))})
    if error:
        events.append({"type": "log", "time": start_time + steps, "level": "error", "message": error})
    events.append({"type": "end", "time": start_time + steps + 1, "status": status, "step": steps,
                   "adapter_path": None if status == "failed" else str(run.adapter_path), "error": error})
    run.path.mkdir(parents=True, exist_ok=True)
    with open(run.events_path, "w", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")
    run.write_status(status, pid=None, created=start_time, error=error)


def make_run(workspace, run_id: str, preset: str = "llama-lora") -> RunDir:
    """A run directory with a valid run.yaml, as create_run leaves it (no status yet)."""
    from workbench.core import atomic
    from workbench.core.config import RunConfig, config_to_dict

    run = RunDir(workspace.run_dir(run_id))
    run.path.mkdir(parents=True)
    config = RunConfig(preset=preset, model={"name_or_path": MODEL})
    atomic.write_yaml(run.config_path, config_to_dict(config))
    return run


def save_checkpoint(run: RunDir, events: EventWriter, step: int) -> None:
    checkpoint = run.checkpoints_path / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / CHECKPOINT_MARKER).write_text("ok")
    events.emit("checkpoint", step=step, path=str(checkpoint))


def train(run: RunDir, steps: int, rate: float, fail_at: int | None, hold: bool, start_step: int,
          error: str) -> int:
    events = EventWriter(run.events_path)
    run.write_status("running", pid=os.getpid())
    events.emit("start", run_id=run.run_id, pid=os.getpid(), model=MODEL, method="lora", device="cpu",
                total_steps=steps, trainable_params=1024, all_params=100_000)
    interval = 1.0 / rate if rate > 0 else 0.0
    step = start_step
    while True:
        action = run.pending_request()
        if action:
            run.clear_request()
        if action == "stop":
            save_checkpoint(run, events, step)
            events.emit("end", status="stopped", step=step, adapter_path=str(run.adapter_path), error=None)
            run.write_status("stopped", pid=os.getpid())
            return 0
        if action == "pause":
            run.write_status("paused", pid=os.getpid())
            events.emit("log", level="info", message=f"paused at step {step}")
            while run.pending_request() not in ("resume", "stop"):
                time.sleep(0.02)
            if run.pending_request() == "resume":
                run.clear_request()
                run.write_status("running", pid=os.getpid())
                events.emit("log", level="info", message=f"resumed at step {step}")
            continue
        if step >= steps:
            if hold:
                time.sleep(0.02)
                continue
            events.emit("end", status="completed", step=step, adapter_path=str(run.adapter_path), error=None)
            run.write_status("completed", pid=os.getpid())
            return 0
        step += 1
        if fail_at is not None and step >= fail_at:
            events.emit("log", level="error", message=error)
            events.emit("end", status="failed", step=step, adapter_path=None, error=error)
            run.write_status("failed", pid=os.getpid(), error=error)
            return 1
        events.emit("step", **step_fields(step, steps))
        if step % 10 == 0:
            events.emit("eval", step=step, eval_loss=eval_loss(step), perplexity=math.exp(eval_loss(step)))
        if interval:
            time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="step events per second (0: as fast as possible)")
    parser.add_argument("--fail-at", type=int, help="fail with --error at this step")
    parser.add_argument("--error", default="CUDA out of memory. Tried to allocate 2.00 GiB")
    parser.add_argument("--hold", action="store_true", help="after the last step keep running until stopped")
    parser.add_argument("--resume-from", help="checkpoint directory (checkpoint-N) to continue from")
    args = parser.parse_args(argv)
    start_step = int(Path(args.resume_from).name.rpartition("-")[2]) if args.resume_from else 0
    return train(RunDir(Path(args.run_dir)), args.steps, args.rate, args.fail_at, args.hold, start_step, args.error)


if __name__ == "__main__":
    sys.exit(main())
