"""`doctor --selftest`: train a model for a few steps with every method this machine supports, and measure.

The measuring happens in one engine child (`python -m workbench.engine.selftest`, JSON lines); this module
is its parent, shared by the CLI and the System screen, and imports no torch. It starts the child in a
temporary workspace, forwards its progress, and collects one result per stage:
  model   the model trained on: a random-weight model built offline from a real architecture's config,
          sized for this machine (SIZES), or `--model`
  probe   the matmul throughput of this device per precision, the peak that MFU is measured against
  lora, qlora, dora  a real run of each method through the trainer (session.py, build.py, the run
          directory), paused and resumed through control.json, then generation with and without the adapter;
          samples/s, tokens/s, MFU, peak memory against core.memory's estimate, attention kernel
A child that dies (a segfault in a native library, the OOM killer) fails the stage it was in; a fresh child
then runs the remaining methods, so one broken method never hides the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.core.family import ALIAS_CONFIGS
from workbench.core.memory import ModelShape, linear_layers

METHODS = ("lora", "qlora", "dora")
STAGES = ("model", "probe", *METHODS)
# Set to a comma-separated list of top-level packages to make the engine child behave as if they were not
# installed (the test of a failing stage; also a quick way to check the degraded paths on a full install).
SIMULATE_MISSING_ENV = "LORA_WORKBENCH_SELFTEST_WITHOUT"


@dataclass(frozen=True)
class Size:
    """A random-weight llama-architecture model and the batch it trains with."""

    label: str
    architecture: dict[str, Any]  # LlamaConfig fields
    batch: int
    max_length: int
    steps: int


_SMOLLM2 = {key: value for key, value in ALIAS_CONFIGS["smollm2-135m"].items()
            if key not in ("model_type", "architectures")}
SIZES: dict[str, Size] = {
    # CI: seconds per method. Hidden 64: bitsandbytes' CPU 4-bit inference needs in_features >= its blocksize.
    "tiny": Size("tiny llama (hidden 64, 2 layers)",
                 dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True),
                 batch=2, max_length=64, steps=4),
    # A CPU: SmolLM2-135M's shape, a few minutes for all methods on 2 cores.
    "135m": Size("llama, SmolLM2-135M shape", _SMOLLM2, batch=2, max_length=128, steps=4),
    # A GPU: Llama-3.2-1B's shape.
    "1b": Size("llama, Llama-3.2-1B shape",
               dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
                    rope_theta=500000.0, tie_word_embeddings=True),
               batch=8, max_length=1024, steps=8),
    # benchmarks/gpu_check.py: QLoRA memory of an 8B model (Llama-3.1-8B's shape).
    "8b": Size("llama, Llama-3.1-8B shape",
               dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
                    rope_theta=500000.0, tie_word_embeddings=False),
               batch=4, max_length=1024, steps=4),
}
CPU_SIZE, GPU_SIZE = "135m", "1b"
# With --model the batch follows the device: a real model is as large as the user made it.
MODEL_BATCH = {"cpu": (2, 128, 4), "cuda": (8, 1024, 8)}


def matmul_flops_per_token(shape: ModelShape) -> int:
    """Multiply-accumulates x 2 of one token through every linear layer and the LM head."""
    blocks = sum(spec.count * spec.in_features * spec.out_features for spec in linear_layers(shape))
    return 2 * (blocks + shape.vocab * shape.hidden)


def training_flops_per_token(shape: ModelShape, tokens_per_example: int, trainable_params: int) -> float:
    """Model FLOPs of one trained token with a frozen base: the forward pass, and a backward pass that computes
    input gradients through the frozen weights (as many FLOPs as the forward) but weight gradients only for the
    adapter (another 2 x its parameters). Causal attention: scores and the weighted sum over on average half
    the example, forward once and backward twice. Recomputation (gradient checkpointing), DoRA's weight norm
    and 4-bit dequantization are overheads, not model FLOPs: MFU counts useful work only."""
    forward_matmul = matmul_flops_per_token(shape)
    attention_forward = 2 * 2 * shape.layers * shape.q_dim * tokens_per_example / 2
    adapter = 2 * trainable_params
    return 2 * forward_matmul + 3 * attention_forward + 3 * adapter


def default_size(cuda: bool) -> str:
    return GPU_SIZE if cuda else CPU_SIZE


# -- the parent -------------------------------------------------------------------------------------------
def failed(stage: str, reason: str) -> dict[str, Any]:
    return {"type": "stage", "stage": stage, "status": "failed", "reason": reason}


@dataclass
class SelftestRun:
    """One self-test: the engine children it starts and the stage results they report."""

    workspace_root: Path
    model: str | None = None
    size: str | None = None
    methods: tuple[str, ...] = METHODS
    on_message: Callable[[dict[str, Any]], None] = lambda message: None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="lora-workbench-selftest-") as scratch:
            model_dir: str | None = None
            while True:
                pending = [stage for stage in ("model", "probe", *self.methods) if stage not in self.stages]
                if not pending:
                    break
                died_in = self._run_child(Path(scratch), [m for m in self.methods if m in pending], model_dir)
                model = self.stages.get("model") or {}
                model_dir = model.get("model_dir")
                if model.get("status") != "ok" or died_in in (None, "probe"):
                    # Nothing to retry with: the stages still pending are not run.
                    reason = (f"the model stage failed ({model.get('reason')})" if model.get("status") != "ok"
                              else f"the worker died in the {died_in} stage" if died_in
                              else "the worker ended without reporting it")
                    for stage in pending:
                        if stage not in self.stages:
                            self.on_message(self.stages.setdefault(stage, failed(stage, f"not run: {reason}")))
        return self.report(time.monotonic() - started)

    def _run_child(self, scratch: Path, methods: list[str], model_dir: str | None) -> str | None:
        """One engine child; returns the stage it was in when it died (None: it finished every stage)."""
        from workbench.core.jsonproc import JsonLineProcess

        args = ["--scratch", str(scratch), "--workspace", str(self.workspace_root), "--methods", ",".join(methods)]
        if self.model:
            args += ["--model", self.model]
        size = (self.stages.get("model") or {}).get("size") or self.size  # else the child sizes for its device
        if size:
            args += ["--size", size]
        if model_dir:
            args += ["--model-dir", model_dir]
        log_path = self.workspace_root / "logs" / "selftest.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        child = JsonLineProcess("workbench.engine.selftest", args, log_path=log_path)
        current: str | None = None
        try:
            for message in child.messages():
                kind = message.get("type")
                if kind == "stage_start":
                    current = message["stage"]
                elif kind == "stage":
                    self.stages[message["stage"]] = message
                    current = None
                elif kind == "error":  # the child died: blame the stage it was in, else the next one
                    stage = current or next((s for s in ("model", "probe", *methods) if s not in self.stages), None)
                    if stage is None:  # it died after reporting everything
                        continue
                    self.stages.setdefault(stage, failed(stage, message.get("message", "the worker failed")))
                    message = self.stages[stage]
                    current = stage
                self.on_message(message)
        finally:
            child.close()
        return current

    def report(self, seconds: float) -> dict[str, Any]:
        ordered = [self.stages[stage] for stage in STAGES if stage in self.stages]
        model = self.stages.get("model", {})
        return {
            "device": model.get("device"),
            "model": {key: model.get(key) for key in ("spec", "label", "architecture", "parameters")},
            "stages": ordered,
            "ok": all(stage["status"] == "ok" for stage in ordered),
            "seconds": round(seconds, 1),
        }


def run_selftest(workspace_root: Path, model: str | None = None, size: str | None = None,
                 methods: tuple[str, ...] = METHODS,
                 on_message: Callable[[dict[str, Any]], None] = lambda message: None) -> dict[str, Any]:
    """The whole self-test; `on_message` sees every progress and stage message as it arrives."""
    return SelftestRun(workspace_root, model, size, methods, on_message).run()


# -- output -----------------------------------------------------------------------------------------------
def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def progress_line(message: dict[str, Any]) -> str | None:
    """One human line for a progress or stage message (None for the others)."""
    kind, stage = message.get("type"), message.get("stage", "")
    if kind == "progress":
        return f"[{stage}] {message.get('message', '')}"
    if kind == "stage":
        status = message["status"]
        return f"[{stage}] {status}" + (f": {message['reason']}" if message.get("reason") else "")
    return None


METHOD_COLUMNS = ("stage", "status", "samples/s", "tokens/s", "MFU", "memory est/meas", "attention", "note")


def method_row(stage: dict[str, Any]) -> list[str]:
    """The table row of a method stage (also the System screen's)."""
    memory = stage.get("memory") or {}
    ratio = memory.get("ratio")
    mib = (f"{ratio:.2f} ({memory['estimated_mb']:.0f}/{memory['measured_mb']:.0f} MiB)"
           if ratio is not None else "-")
    mfu = stage.get("mfu")
    attention = stage.get("attention") or "-"
    if stage.get("liger"):
        attention += "+liger"
    note = stage.get("reason") or ""
    if stage["status"] == "ok":
        note = f"{stage.get('precision')}, paused at step {stage.get('paused_at_step')} and resumed"
    return [stage["stage"], stage["status"], _number(stage.get("samples_per_s")), _number(stage.get("tokens_per_s")),
            "-" if mfu is None else f"{100 * mfu:.1f}%", mib, attention, note]


def format_selftest(report: dict[str, Any]) -> list[str]:
    """The plain-text report of `doctor --selftest`."""
    stages = {stage["stage"]: stage for stage in report["stages"]}
    model, probe = stages.get("model", {}), stages.get("probe", {})
    lines = [f"self-test on {report.get('device') or '?'} in {report['seconds']:.0f}s: "
             f"{'every stage ok' if report['ok'] else 'FAILED stages below'}"]
    if model.get("status") == "ok":
        lines.append(f"model  {model['label']}, {model['parameters'] / 1e6:.1f}M parameters ({model['spec']})")
    else:
        lines.append(f"model  failed: {model.get('reason')}")
    if probe.get("status") == "ok":
        peaks = ", ".join(f"{dtype} {tflops:.3g} TFLOP/s" for dtype, tflops in probe["tflops"].items())
        lines.append(f"probe  matmul {probe['matrix']}x{probe['matrix']}: {peaks} (the peak MFU is measured against)")
    else:
        lines.append(f"probe  failed: {probe.get('reason')}")
    rows = [method_row(stages[m]) for m in METHODS if m in stages]
    widths = [max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(METHOD_COLUMNS)]
    for row in [list(METHOD_COLUMNS), *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for method in METHODS:
        memory = (stages.get(method) or {}).get("memory") or {}
        if memory.get("terms"):
            terms = ", ".join(f"{name} {term['estimated_mb']:.0f}/{term['measured_mb']:.0f} MiB"
                              for name, term in memory["terms"].items())
            lines.append(f"{method:6} memory estimate/measured ({memory['basis']}): {terms}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m workbench.core.selftest --workspace DIR [--model M] [--size S]`: the self-test as a JSON-lines
    job (the System screen's): every progress and stage message, then {"type": "result", "report": ...}."""
    parser = argparse.ArgumentParser(prog="python -m workbench.core.selftest")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--model")
    parser.add_argument("--size", choices=sorted(SIZES))
    args = parser.parse_args(argv)

    def forward(message: dict[str, Any]) -> None:
        print(json.dumps(message, ensure_ascii=False), flush=True)

    report = run_selftest(Path(args.workspace), args.model, args.size, on_message=forward)
    forward({"type": "result", "report": report})
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
