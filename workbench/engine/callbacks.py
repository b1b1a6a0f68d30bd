"""TrainerCallbacks that turn the HF training loop into docs/DESIGN.md events and honour control requests."""

from __future__ import annotations

import math
import time
from pathlib import Path

import psutil
import torch
from transformers import TrainerCallback

from workbench.core import atomic
from workbench.core.events import EventWriter
from workbench.core.runs import CHECKPOINT_MARKER, RunDir
from workbench.engine.control import RunControl


class GpuProbe:
    """VRAM from torch.cuda and utilisation from NVML; every field is None where it cannot be measured."""

    def __init__(self):
        self.cuda = torch.cuda.is_available()
        self._nvml_handle = None
        if self.cuda:
            try:
                import pynvml

                pynvml.nvmlInit()
                index = torch.cuda.current_device()
                visible = [d for d in __import__("os").environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
                physical = int(visible[index]) if visible and visible[index].isdigit() else index
                self._nvml_handle = pynvml.nvmlDeviceGetHandleByIndex(physical)
            except Exception:  # noqa: BLE001 - NVML missing or refusing: utilisation stays None
                self._nvml_handle = None

    def sample(self) -> dict:
        mb = 1024 * 1024
        fields = {"vram_allocated_mb": None, "vram_reserved_mb": None, "vram_peak_mb": None, "gpu_util": None}
        if self.cuda:
            fields["vram_allocated_mb"] = torch.cuda.memory_allocated() / mb
            fields["vram_reserved_mb"] = torch.cuda.memory_reserved() / mb
            fields["vram_peak_mb"] = torch.cuda.max_memory_allocated() / mb
        if self._nvml_handle is not None:
            try:
                import pynvml

                fields["gpu_util"] = float(pynvml.nvmlDeviceGetUtilizationRates(self._nvml_handle).gpu)
            except Exception:  # noqa: BLE001
                pass
        return fields

    def sample_all_ranks(self) -> dict:
        """sample() with vram_*_mb the maximum over ranks and vram_per_gpu_mb each rank's allocated VRAM
        (rank order); on the CPU the list is None and no collective runs. Every rank must call it."""
        fields = self.sample()
        if not self.cuda:
            return {**fields, "vram_per_gpu_mb": None}
        samples = [fields]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            samples = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(samples, fields)
        merged = dict(fields)
        for key in ("vram_allocated_mb", "vram_reserved_mb", "vram_peak_mb", "gpu_util"):
            values = [sample[key] for sample in samples if sample[key] is not None]
            merged[key] = max(values) if values else None
        merged["vram_per_gpu_mb"] = [sample["vram_allocated_mb"] for sample in samples]
        return merged


class EventCallback(TrainerCallback):
    """Appends start/step/eval/checkpoint events and marks complete checkpoints, on rank 0 (the only rank with
    a writer); the other ranks take part in the VRAM gather only."""

    def __init__(self, run: RunDir, writer: EventWriter | None, start_fields: dict):
        self.run = run
        self.writer = writer
        self.start_fields = start_fields
        self.process = psutil.Process()
        self.gpu = GpuProbe()
        self._last_time = None
        self._last_tokens = 0
        self._last_step = 0
        self._step_seconds = None  # moving average, for the ETA

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.monotonic()
        self._last_tokens = state.num_input_tokens_seen
        self._last_step = state.global_step
        if state.is_world_process_zero:
            # Memory with the model, the adapter and the data loaded, before the first step allocates more.
            self.writer.emit("start", total_steps=state.max_steps, ram_mb=self.process.memory_info().rss / (1024 * 1024),
                             **self.gpu.sample(), **self.start_fields)
            self.run.write_status("running")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        gpu = self.gpu.sample_all_ranks()  # collective: every rank takes part, rank 0 writes
        if not state.is_world_process_zero:
            return
        now = time.monotonic()
        elapsed = now - self._last_time if self._last_time is not None else None
        steps = state.global_step - self._last_step
        tokens = state.num_input_tokens_seen - self._last_tokens
        tokens_per_s = tokens / elapsed if elapsed and tokens > 0 else None
        if elapsed and steps > 0:
            per_step = elapsed / steps
            self._step_seconds = per_step if self._step_seconds is None else 0.8 * self._step_seconds + 0.2 * per_step
        self._last_time, self._last_tokens, self._last_step = now, state.num_input_tokens_seen, state.global_step
        remaining = max(state.max_steps - state.global_step, 0)
        self.writer.emit(
            "step",
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=logs.get("epoch", state.epoch),
            loss=logs.get("loss"),
            grad_norm=logs.get("grad_norm"),
            lr=logs.get("learning_rate"),
            tokens_per_s=tokens_per_s,
            tokens_seen=state.num_input_tokens_seen,
            ram_mb=self.process.memory_info().rss / (1024 * 1024),
            eta_s=remaining * self._step_seconds if self._step_seconds is not None else None,
            **gpu,
        )

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics or "eval_loss" not in metrics:
            return
        loss = metrics["eval_loss"]
        self.writer.emit("eval", step=state.global_step, eval_loss=loss,
                         perplexity=math.exp(loss) if loss < 50 else None)
        # Time spent evaluating is not training throughput.
        self._last_time = time.monotonic()

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            # Written last: only a checkpoint carrying this marker is ever resumed from.
            atomic.write_json(checkpoint / CHECKPOINT_MARKER, {"step": state.global_step, "time": time.time()})
            self.writer.emit("checkpoint", step=state.global_step, path=str(checkpoint))
        self._last_time = time.monotonic()


class ControlCallback(TrainerCallback):
    """Honours control.json after every optimizer step.

    stop: the step's checkpoint and the adapter are saved and training ends; the schedule is kept, so a
    resume continues the same run. pause: the step is logged and checkpointed (so even a crash while paused
    loses nothing), then the trainer waits in place, keeping its memory, until resume or stop.
    """

    def __init__(self, run: RunDir, writer: EventWriter | None, session: RunControl):
        self.run = run
        self.writer = writer
        self.session = session
        self._pause_pending = False

    def _log(self, message: str) -> None:
        if self.writer is not None:
            self.writer.emit("log", level="info", message=message)

    def on_step_end(self, args, state, control, **kwargs):
        action = self.session.poll_control()
        if action == "resume":  # the run is not paused: nothing to resume
            if self.session.is_main:
                self.run.clear_request()
        elif action == "pause":
            self._pause_pending = True
            control.should_save = True
        elif action == "stop":
            self._stop(state, control)
        return control

    def on_save(self, args, state, control, **kwargs):
        if not self._pause_pending:
            return control
        self._pause_pending = False
        if self.session.is_main:
            self.run.clear_request()
            self.run.write_status("paused")
        self._log(f"paused at step {state.global_step}; 'runs resume' continues in place")
        if self.session.wait_while_paused() == "stop":
            self._stop(state, control)  # the checkpoint of this step is already saved
        else:
            if self.session.is_main:
                self.run.write_status("running")
            self._log(f"resumed at step {state.global_step}")
        return control

    def _stop(self, state, control) -> None:
        self.session.stopping = True
        if self.session.is_main:
            self.run.write_status("stopping")
        self._log(f"stop requested at step {state.global_step}: saving a checkpoint and the adapter")
        control.should_save = True
        control.should_training_stop = True
