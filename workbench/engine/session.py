"""One training session of a run: model + data + SFTTrainer + callbacks, and how it ends."""

from __future__ import annotations

import os
import time
from pathlib import Path

from workbench.core.config import RunConfig, load_run_config
from workbench.core.events import EventWriter
from workbench.core.runs import RunDir
from workbench.core.workspace import Workspace
from workbench.engine.control import error_message

PAUSE_POLL_S = 0.5


def _distributed():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


class TrainingSession:
    """Implements engine.control.RunControl for the callbacks and the trainer builder."""

    def __init__(self, run: RunDir, resume_from: Path | None = None, is_main: bool = True):
        self.run = run
        self.resume_from = resume_from
        self.is_main = is_main
        self.writer = EventWriter(run.events_path) if is_main else None
        self.stopping = False
        self._signal_action: str | None = None
        self.trainer = None

    # -- control --------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """A signal (SIGTERM/SIGINT) means the same as a stop request: checkpoint, adapter, end 'stopped'."""
        self._signal_action = "stop"
        self.emit("log", level="info", message=f"{reason}: stopping after the current step")

    def poll_control(self) -> str | None:
        """The pending action; in a multi-process run rank 0 decides and every rank gets the same answer."""
        action = None
        if self.is_main:
            action = self._signal_action or self.run.pending_request()
        dist = _distributed()
        if dist is not None:
            box = [action]
            dist.broadcast_object_list(box, src=0)
            action = box[0]
        return action

    def wait_while_paused(self) -> str:
        while True:
            time.sleep(PAUSE_POLL_S)
            action = self.poll_control()
            if action in ("resume", "stop"):
                if action == "resume" and self.is_main:
                    self.run.clear_request()
                return action

    def emit(self, event_type: str, **fields) -> None:
        if self.writer is not None:
            self.writer.emit(event_type, **fields)

    # -- the run --------------------------------------------------------------------------------
    def execute(self) -> int:
        config = load_run_config(self.run.config_path)
        workspace = Workspace(self.run.path.parent.parent)
        if self.resume_from is not None:
            self.emit("log", level="info", message=f"resuming from {self.resume_from.name}")
        self.trainer = self._build_trainer(config, workspace)
        self.trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        status = "stopped" if self.stopping else "completed"
        adapter = self._save_adapter()
        step = self.trainer.state.global_step
        if self.is_main:
            self.run.clear_request()
            # status.json first: whoever sees the end event must find the final state too.
            self.run.write_status(status, step=step, error=None, finished=time.time())
            self.emit("end", status=status, step=step, adapter_path=str(adapter), error=None)
        return 0

    def fail(self, error: BaseException) -> None:
        if not self.is_main:
            return
        message = error_message(error)
        step = self.trainer.state.global_step if self.trainer is not None else 0
        adapter = self.run.adapter_path if self.run.has_adapter else None
        self.run.write_status("failed", step=step, error=message, finished=time.time())
        self.emit("end", status="failed", step=step, adapter_path=str(adapter) if adapter else None, error=message)

    def _save_adapter(self) -> Path:
        """Save the PEFT adapter (and tokenizer) once, from rank 0; it loads with PeftModel.from_pretrained."""
        trainer = self.trainer
        target = self.run.adapter_path
        staging = target.with_name(".adapter.partial")
        if getattr(trainer, "is_fsdp_enabled", False):
            # Checkpoints stay sharded; the adapter itself is gathered whole once (PEFT's FSDP recipe).
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(str(staging))  # collective under FSDP/DeepSpeed; writes only on the main process
        if self.is_main:
            import shutil

            # The adapter directory holds safetensors and JSON only; run.yaml already records the arguments.
            (staging / "training_args.bin").unlink(missing_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        return target

    def _build_trainer(self, config: RunConfig, workspace: Workspace):
        from workbench.engine.build import build_trainer

        return build_trainer(config, workspace, self)
