"""The self-test worker: `python -m workbench.engine.selftest --scratch DIR [--model M | --model-dir D]
[--size S] [--methods lora,qlora,dora]`, started by core/selftest.py, speaking JSON lines on stdout:
stage_start, progress, stage (one per stage, with its measurements), in the order model, probe, methods.

Every method is a real run in a workspace under --scratch: run.yaml from the family's preset, the trainer's
own entry point (workbench.engine.trainer.main: session.py, build.py, the event and control callbacks),
events.jsonl, status.json, checkpoints, the adapter. It runs in this process, so that the matmul probe, the
peak-memory counters and the training share one process and one device. A second thread watches
events.jsonl, checks that the run paused (asked through control.json before it started) with a complete
checkpoint, and resumes it. Then the playground's engine generates with and without the adapter.

Memory is measured from just before the model loads: torch.cuda.max_memory_allocated on a GPU; on the CPU
the process's peak resident set (VmHWM, reset through /proc/self/clear_refs), after freed heap memory has
been handed back to the system (malloc_trim), so a method does not reuse the previous one's pages unseen.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from workbench.core.events import EndEvent, Event, EventTail, StartEvent, StepEvent, read_typed_events
from workbench.core.selftest import (
    METHODS,
    MODEL_BATCH,
    SIMULATE_MISSING_ENV,
    SIZES,
    default_size,
    training_flops_per_token,
)

MB = 1024 * 1024
PROMPT = "What is the capital of France?"
WATCH_TIMEOUT_S = 600.0
# What the trainer path imports beyond torch/transformers/peft/accelerate, and how to bring it to a box
# that has no package index.
TRAINER_PACKAGES = ("trl", "datasets")
CARRY_HINT = ("pip download trl datasets -d wheels/ on a connected machine with the same Python, copy wheels/ "
              "over, then pip install --no-index --find-links wheels/ trl datasets")

# transformers' attn_implementation -> what the report calls it
ATTENTION_NAMES = {"workbench_per_example_sdpa": "sdpa per example", "flash_attention_2": "flash-attn 2",
                   "flash_attention_3": "flash-attn 3"}

_emit_lock = threading.Lock()


def emit(message_type: str, **fields: Any) -> None:
    from workbench.engine.protocol import emit as protocol_emit

    with _emit_lock:  # the watcher thread reports progress too
        protocol_emit(message_type, **fields)


def simulate_missing_packages() -> list[str]:
    """Make the packages named in $LORA_WORKBENCH_SELFTEST_WITHOUT unimportable, as if not installed: `import x`
    raises ModuleNotFoundError and importlib.util.find_spec('x') is None, which is how transformers and peft
    decide what is available."""
    names = [name.strip() for name in os.environ.get(SIMULATE_MISSING_ENV, "").split(",") if name.strip()]
    for name in names:
        sys.modules[name] = None  # type: ignore[assignment]
    return names


def die_with_parent() -> None:
    """Linux: end with the parent (the System screen kills it when the user leaves), not train on unseen."""
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def missing_trainer_packages() -> list[str]:
    import importlib.util

    return [name for name in TRAINER_PACKAGES if importlib.util.find_spec(name) is None]


# -- memory -----------------------------------------------------------------------------------------------
class MemoryMeter:
    """Peak memory of a stretch of this process: CUDA allocations on a GPU, resident set on the CPU."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        self.basis = "torch.cuda.max_memory_allocated" if self.cuda else "peak RSS (VmHWM)"

    def current(self) -> float:
        import psutil
        import torch

        return torch.cuda.memory_allocated() if self.cuda else psutil.Process().memory_info().rss

    def start(self) -> float:
        """Free what can be freed, reset the peak, and return the baseline."""
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):
                pass  # not glibc: freed pages stay counted in the baseline
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return self.current()

    def peak(self) -> float:
        import torch

        if self.cuda:
            return torch.cuda.max_memory_allocated()
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


# -- stages -----------------------------------------------------------------------------------------------
def build_model(scratch: Path, size_name: str) -> tuple[Path, dict[str, Any]]:
    from workbench.engine.tiny import build_tiny_model

    import torch

    size = SIZES[size_name]
    # On a GPU in bf16: initialising billions of weights on the CPU in fp32 takes minutes.
    cuda = torch.cuda.is_available()
    directory = build_tiny_model(scratch / f"model-{size_name}", "llama", device="cuda" if cuda else "cpu",
                                 dtype=torch.bfloat16 if cuda else None, **size.architecture)
    return directory, {"spec": f"random {size_name}", "label": size.label, "size": size_name}


def resolve_user_model(spec: str, workspace_root: Path | None) -> tuple[Path, dict[str, Any]]:
    from workbench.core.workspace import Workspace
    from workbench.engine.models import resolve_and_materialize

    source = resolve_and_materialize(spec, Workspace.resolve(workspace_root), log=lambda m: emit(
        "progress", stage="model", message=m))
    return Path(source), {"spec": spec, "label": spec, "size": None}


def model_stage(args) -> tuple[Path, dict[str, Any]]:
    import torch

    from workbench.core.family import read_config_json
    from workbench.core.memory import parameter_count, shape_from_config

    cuda = torch.cuda.is_available()
    if args.model_dir:  # a restarted worker: the model the first one built or resolved
        directory, info = Path(args.model_dir), {"spec": args.model or f"random {args.size}",
                                                 "label": args.model or SIZES[args.size].label,
                                                 "size": None if args.model else args.size}
    elif args.model:
        emit("progress", stage="model", message=f"resolving {args.model}")
        directory, info = resolve_user_model(args.model, args.workspace)
    else:
        size = args.size or default_size(cuda)
        emit("progress", stage="model", message=f"building a random-weight {SIZES[size].label} model")
        directory, info = build_model(Path(args.scratch), size)
    config = read_config_json(directory)
    shape = shape_from_config(config)
    from workbench.engine.models import describe_device

    return directory, {**info, "model_dir": str(directory), "architecture": config.get("model_type"),
                       "parameters": parameter_count(shape), "device": describe_device(), "cuda": cuda}


def matmul_tflops(dtype_name: str, n: int, repeats: int) -> float:
    """Best-of-`repeats` throughput of an n x n x n matmul in `dtype_name` on this device."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up the kernels
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    del a, b
    return 2 * n**3 / best / 1e12


def probe_stage(cuda: bool) -> dict[str, Any]:
    """The matmul peak per precision the methods may train in (bf16/fp16 autocast, fp32)."""
    import torch

    from workbench.engine.build import cpu_has_fast_bf16

    if cuda:
        n, repeats = 8192, 10
        dtypes = ["bf16" if torch.cuda.is_bf16_supported() else "fp16", "fp32"]
    else:
        n, repeats = 2048, 3
        dtypes = ["bf16", "fp32"] if cpu_has_fast_bf16() else ["fp32"]
    return {"matrix": n, "tflops": {dtype: round(matmul_tflops(dtype, n, repeats), 4) for dtype in dtypes}}


def write_data(directory: Path, rows: int, max_length: int) -> Path:
    """Rows whose answers are longer than max_length tokens, so every example is cut to exactly max_length:
    the shape the memory estimate assumes, and a known token count per step."""
    from workbench.core.data.demo import DEMO_FILE

    demo = [json.loads(line) for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    answers = " ".join(row["messages"][-1]["content"] for row in demo)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "train.jsonl", "w", encoding="utf-8") as handle:
        for i in range(rows):
            question = demo[i % len(demo)]["messages"][0]["content"][:80]
            start = (i * 97) % len(answers)
            answer = (answers[start:] + " " + answers)[: 8 * max_length]
            handle.write(json.dumps({"messages": [{"role": "user", "content": question},
                                                  {"role": "assistant", "content": answer}]},
                                    ensure_ascii=False) + "\n")
    return directory


def method_config(workspace, method: str, model_dir: Path, data: Path, batch: int, max_length: int, steps: int):
    """The family's preset for the method (its LoRA preset with the method switched on where the family has
    none), with the self-test's batch, length and steps; no evaluation, no intermediate checkpoints."""
    from workbench.core.family import family_of_config, read_config_json
    from workbench.core.errors import UserError
    from workbench.core.newrun import resolve_config
    from workbench.core.presets import list_presets

    family = family_of_config(read_config_json(model_dir))
    if family is None or family.task != "causal_lm":
        raise UserError(f"{model_dir}: not a causal LM of a supported family")
    # The built-in `<family>-<method>` preset (not, say, the demo's, which is also a llama LoRA).
    names = {p.name for p in list_presets(None) if p.data.get("family") == family.name}
    prefix = family.name.replace("_", "-")
    preset = f"{prefix}-{method}"
    switches: list[str] = []
    if preset not in names:
        preset = f"{prefix}-lora"
        switches = {"dora": ["method=dora", "lora.use_dora=true"],
                    "qlora": ["method=qlora", "quantization.load_in_4bit=true"]}[method]
    overrides = [
        *switches,
        f"training.per_device_train_batch_size={batch}",
        f"training.max_length={max_length}",
        "training.warmup_steps=0",
        "training.learning_rate=0.001",  # a few steps must move the adapter visibly
        "training.eval_strategy=no",
        f"training.save_steps={steps + 1}",  # only the pause checkpoints
        "training.report_to_tensorboard=false",
    ]
    return resolve_config(workspace, preset, str(data), str(model_dir), overrides, steps), preset


class Watcher(threading.Thread):
    """Follows a run's events: reports progress, and resumes the run once it has paused.

    The pause is requested before the run starts, so the trainer takes it at the end of step 1, whatever the
    speed of the steps: a request sent on seeing a step event could arrive after a fast run's last step. The
    first step is left out of the throughput anyway (it pays one-off allocation)."""

    def __init__(self, rundir, method: str):
        super().__init__(name=f"watch-{method}", daemon=True)
        self.rundir, self.method = rundir, method
        self.paused_at: int | None = None
        self.pause_s: float | None = None
        self.problem: str | None = None

    def run(self) -> None:  # noqa: D102 - threading.Thread's entry point
        tail = EventTail(self.rundir.events_path)
        deadline = time.monotonic() + WATCH_TIMEOUT_S
        first_step_seen = None
        while time.monotonic() < deadline:
            for event in tail.read_new_events():
                if isinstance(event, StepEvent):
                    emit("progress", stage=self.method, step=event.step, total=event.total_steps,
                         message=f"step {event.step}/{event.total_steps} loss {event.loss or 0:.4f}")
                    first_step_seen = first_step_seen or time.monotonic()
                elif isinstance(event, EndEvent):
                    if self.paused_at is None:
                        self.problem = "the run ended without pausing"
                    return
            if first_step_seen is not None and self.paused_at is None \
                    and self.rundir.read_status().get("state") == "paused":
                self._check_pause(first_step_seen)
            time.sleep(0.05)
        self.problem = f"the run did not end within {WATCH_TIMEOUT_S:.0f}s"

    def _check_pause(self, first_step_seen: float) -> None:
        self.pause_s = time.monotonic() - first_step_seen
        checkpoint = self.rundir.latest_checkpoint()
        self.paused_at = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else -1
        if checkpoint is None:
            self.problem = "paused without a complete checkpoint"
        emit("progress", stage=self.method, message=f"paused at step {self.paused_at} "
                                                    f"({self.pause_s:.1f}s after the step); resuming")
        self.rundir.request("resume")


def throughput(events: list[Event], batch: int, paused_at: int | None) -> dict[str, float | None]:
    """Samples/s and tokens/s over the steps after the first (which pays one-off allocation), leaving out
    the step that spans the pause and resume."""
    steps = [e for e in events if isinstance(e, StepEvent) and e.extra.get("tokens_seen") is not None]
    seconds = tokens = samples = 0.0
    for before, after in zip(steps, steps[1:]):
        if before.step == paused_at:
            continue
        seconds += after.time - before.time
        tokens += after.extra["tokens_seen"] - before.extra["tokens_seen"]
        samples += (after.step - before.step) * batch
    if seconds <= 0:
        return {"samples_per_s": None, "tokens_per_s": None}
    return {"samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds}


def memory_report(config, shape, start: StartEvent, baseline: float, peak: float, meter: MemoryMeter):
    """Measured peak against the workbench's estimate for this configuration, as a whole and, on a GPU, in two
    parts: what is allocated when training begins (weights + adapter) and what training adds (gradients,
    optimizer state, activations, logits). Not on the CPU: safetensors weights are memory-mapped and become
    resident only as the first forward reads them. The estimate's CUDA-context allowance is left out: neither
    measure sees it."""
    from workbench.core.memory import estimate_memory

    estimate = estimate_memory(config, shape, gradient_checkpointing=bool(start.extra.get("gradient_checkpointing")))
    at_start = start.extra.get("vram_allocated_mb") if meter.cuda else None
    loaded = at_start * MB - baseline if at_start is not None else None
    measured = peak - baseline
    estimated_loaded = estimate.weights_bytes + estimate.adapter_bytes
    estimated = estimate.total_bytes - estimate.overhead_bytes
    terms = {}
    if loaded is not None:
        terms = {"weights+adapter": {"estimated_mb": estimated_loaded / MB, "measured_mb": loaded / MB},
                 "training": {"estimated_mb": (estimated - estimated_loaded) / MB,
                              "measured_mb": (measured - loaded) / MB}}
    return {"basis": meter.basis, "estimated_mb": estimated / MB, "measured_mb": measured / MB,
            "ratio": estimated / measured if measured > 0 else None, "terms": terms,
            "gradient_checkpointing": estimate.gradient_checkpointing}


def train_method(method: str, scratch: Path, model_dir: Path, plan: tuple[int, int, int], probe: dict,
                 meter: MemoryMeter) -> dict[str, Any]:
    from workbench.core.family import read_config_json
    from workbench.core.memory import shape_from_config
    from workbench.core.newrun import create_run
    from workbench.core.workspace import Workspace
    from workbench.engine import trainer

    batch, max_length, steps = plan
    workspace = Workspace.resolve(scratch / "workspace")
    data = write_data(scratch / "data", batch * (steps + 1), max_length)
    config, preset = method_config(workspace, method, model_dir, data, batch, max_length, steps)
    run = create_run(workspace, config, f"selftest-{method}")
    watcher = Watcher(run, method)
    run.request("pause")  # taken at the end of step 1 (Watcher)
    baseline = meter.start()
    watcher.start()
    code = trainer.main([str(run.path)])
    peak = meter.peak()
    watcher.join(timeout=10)
    if watcher.is_alive():
        watcher.problem = "the watcher did not see the run end"
    status = run.read_status()
    if code != 0:
        return {"status": "failed", "reason": explain(status.get("error") or f"the trainer exited with code {code}"),
                "preset": preset}
    if watcher.problem or watcher.paused_at is None:
        return {"status": "failed", "reason": watcher.problem or "the run was not paused", "preset": preset}
    events = read_typed_events(run.events_path)
    start = next(e for e in events if isinstance(e, StartEvent))
    end = next(e for e in events if isinstance(e, EndEvent))
    if end.status != "completed" or end.step != steps:
        return {"status": "failed", "reason": f"the run ended {end.status} at step {end.step} of {steps}",
                "preset": preset}
    shape = shape_from_config(read_config_json(model_dir))
    speed = throughput(events, batch * config.training.gradient_accumulation_steps, watcher.paused_at)
    started = start.extra  # what this trainer adds to the schema's start event
    peak_tflops = probe["tflops"].get(started.get("precision")) or probe["tflops"].get("fp32")
    flops = training_flops_per_token(shape, max_length, start.trainable_params)
    mfu = speed["tokens_per_s"] * flops / (peak_tflops * 1e12) if speed["tokens_per_s"] and peak_tflops else None
    result = {
        "status": "ok", "reason": None, "preset": preset, "run_dir": str(run.path), "precision": started.get("precision"),
        "steps": end.step, "batch": batch, "max_length": max_length, **speed, "mfu": mfu,
        "model_tflops": speed["tokens_per_s"] * flops / 1e12 if speed["tokens_per_s"] else None,
        "peak_tflops": peak_tflops, "paused_at_step": watcher.paused_at, "pause_s": watcher.pause_s,
        "attention": ATTENTION_NAMES.get(started.get("attention"), started.get("attention")),
        "liger": bool(started.get("liger_kernel")),
        "gradient_checkpointing": started.get("gradient_checkpointing"),
        "trainable_params": start.trainable_params,
        "memory": memory_report(config, shape, start, baseline, peak, meter),
    }
    emit("progress", stage=method, message="generating with and without the adapter")
    result["generation"] = generate_both(workspace, model_dir, run, config)
    if not result["generation"]["adapter_changes_logits"]:
        result.update(status="failed", reason="the trained adapter does not change the model's output")
    return result


def generate_both(workspace, model_dir: Path, run, config) -> dict[str, Any]:
    """The playground's engine: the same greedy prompt without and with the run's adapter, and whether the
    adapter changes the next-token logits at all (greedy text of a random model may not show it)."""
    import torch

    from workbench.engine.generate import Playground

    playground = Playground(workspace)
    messages: list[dict[str, Any]] = []
    playground.load(str(model_dir), [{"name": "selftest", "path": str(run.adapter_path)}],
                    lambda kind, **fields: None, config.model.model_dump(), config.quantization.model_dump())
    playground.run_request({"prompt": PROMPT, "params": {"max_new_tokens": 8},
                            "panes": [{"pane": "base", "adapter": None}, {"pane": "tuned", "adapter": "selftest"}]},
                           lambda kind, **fields: messages.append({"type": kind, **fields}), lambda: False)
    panes = {m["pane"]: m for m in messages if m["type"] == "pane_end"}
    ids, _ = playground.encode(PROMPT, None, False, 8)
    inputs = torch.tensor([ids], device=playground.device)
    with torch.inference_mode():
        playground.model.set_adapter("selftest")
        tuned = playground.model(input_ids=inputs).logits[0, -1].float()
        with playground.model.disable_adapter():
            base = playground.model(input_ids=inputs).logits[0, -1].float()
    delta = (tuned - base).abs().max().item()
    return {"base": panes["base"]["text"], "tuned": panes["tuned"]["text"],
            "tokens_per_s": panes["tuned"]["tokens_per_s"], "adapter_logit_delta": delta,
            "adapter_changes_logits": delta > 0}


def explain(error: str) -> str:
    """The trainer's one-line error, with how to get a package that is missing here."""
    match = re.search(r"No module named '([\w.]+)'", error)
    if match and match.group(1).split(".")[0] in TRAINER_PACKAGES:
        return f"{error}; the trainer needs {' and '.join(TRAINER_PACKAGES)}: pip install them, or {CARRY_HINT}"
    return error


def run_stage(stage: str, work) -> dict[str, Any] | None:
    """One stage: stage_start, its work, then a stage message (failed with a one-line reason on any error)."""
    from workbench.core.errors import UserError

    emit("stage_start", stage=stage)
    started = time.monotonic()
    try:
        result = {"status": "ok", "reason": None, **work()}
    except UserError as error:
        result = {"status": "failed", "reason": str(error)}
    except Exception as error:  # noqa: BLE001 - a failed stage is a finding; the next stage still runs
        import traceback

        traceback.print_exc()
        text = (str(error).strip().splitlines() or [""])[0]
        result = {"status": "failed", "reason": explain(f"{type(error).__name__}: {text}".rstrip(": "))}
    result["seconds"] = round(time.monotonic() - started, 2)
    emit("stage", stage=stage, **result)
    return result


def main(argv: list[str] | None = None) -> int:
    from workbench.engine.protocol import open_protocol

    open_protocol()
    die_with_parent()
    parser = argparse.ArgumentParser(prog="python -m workbench.engine.selftest")
    parser.add_argument("--scratch", required=True, help="temporary directory: model, data, runs")
    parser.add_argument("--workspace", help="the user's workspace, where --model is resolved and cached")
    parser.add_argument("--model", help="train this model instead of a random one")
    parser.add_argument("--model-dir", help="the model a previous worker of this self-test built")
    parser.add_argument("--size", choices=sorted(SIZES))
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    hidden = simulate_missing_packages()
    if hidden:
        print(f"simulating missing packages: {', '.join(hidden)}", file=sys.stderr)
    missing = missing_trainer_packages()
    if missing:
        emit("progress", stage="model", message=f"{', '.join(missing)} not installed: the trainer path needs "
                                                f"{' and '.join(TRAINER_PACKAGES)}; {CARRY_HINT}")
    if not missing:
        # Imported now, so that their code is not counted in the first method's memory.
        import datasets  # noqa: F401
        from trl import SFTConfig, SFTTrainer  # noqa: F401

        import workbench.engine.build  # noqa: F401
    built: list[Path] = []

    def build() -> dict[str, Any]:
        directory, info = model_stage(args)
        built.append(directory)
        return info

    model = run_stage("model", build)
    if model["status"] != "ok":
        return 0
    cuda = model["cuda"]
    probe = run_stage("probe", lambda: probe_stage(cuda))
    if model["size"] is None:  # the user's own model
        batch, max_length, steps = MODEL_BATCH["cuda" if cuda else "cpu"]
        plan = (batch, max_length, steps)
    else:
        size = SIZES[model["size"]]
        plan = (size.batch, size.max_length, size.steps)
    meter = MemoryMeter()
    for method in [m for m in args.methods.split(",") if m]:
        run_stage(method, lambda method=method: train_method(method, Path(args.scratch) / method, built[0], plan,
                                                             probe if probe["status"] == "ok" else {"tflops": {}},
                                                             meter))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
