"""Cost of the event stream and run control per optimizer step, isolated from training noise.

    .venv/bin/python benchmarks/monitoring_overhead.py [--steps 2000]

Calls the trainer's own EventCallback.on_log (RSS, VRAM probe, one flushed JSON line) and
ControlCallback.on_step_end (one control.json check) as the HF loop does once per step, and compares
the time with one optimizer step measured by benchmarks/train_throughput.py (smollm2-135m, batch 8:
~14.6 s on 2 CPU cores) and with a tiny-model step (~0.3 s). Goal: <= 1%.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from transformers import TrainerControl

    from workbench.core.events import EventWriter
    from workbench.core.runs import RunDir
    from workbench.engine.callbacks import ControlCallback, EventCallback

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    run = RunDir(Path(tempfile.mkdtemp()))
    writer = EventWriter(run.events_path)
    events = EventCallback(run, writer, {})
    control_callback = ControlCallback(run, writer, SimpleNamespace(poll_control=run.pending_request, is_main=True))
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=10**9, num_input_tokens_seen=0,
                            epoch=0.0)
    events._last_time, events._last_step, events._last_tokens = time.monotonic(), 0, 0
    control = TrainerControl()
    logs = {"loss": 1.0, "grad_norm": 0.5, "learning_rate": 1e-4, "epoch": 0.1}
    started = time.perf_counter()
    for _ in range(args.steps):
        state.global_step += 1
        state.num_input_tokens_seen += 1000
        control_callback.on_step_end(None, state, control)
        events.on_log(None, state, control, logs=logs)
    per_step = (time.perf_counter() - started) / args.steps
    print(f"events + control: {per_step * 1e3:.3f} ms per optimizer step")
    for label, step_s in (("smollm2-135m batch-8 step", 14.6), ("tiny-model step", 0.3)):
        print(f"  {100 * per_step / step_s:.4f}% of a {step_s} s {label} (goal <= 1%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
