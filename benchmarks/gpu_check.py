"""GPU check (on demand, not a test): is this GPU box ready, how fast, and can the memory estimate be trusted?

    python benchmarks/gpu_check.py [--workspace DIR] [--dry-run]

Sized to finish in under 8 minutes on one H100/H200. Needs only torch, transformers, peft and accelerate
preinstalled, plus this package (pip install --no-deps -e .) and its light core dependencies; it first
lists what is missing and how to bring it as wheels to a box without a package index. It runs, in turn:
  self-test     `doctor --selftest` on a random-weight Llama-3.2-1B-shaped model: LoRA, QLoRA (nf4), DoRA
                through the real trainer, paused and resumed; samples/s, tokens/s, MFU against a matmul
                probe of this GPU, peak memory against the workbench's estimate
  throughput    the workbench trainer against plain TRL at its best settings (no gradient checkpointing,
                flash-attention/Liger where installed), same model, data and batch (train_throughput.py)
  qlora-8b      QLoRA of a random Llama-3.1-8B-shaped model: peak memory against the estimate
  ddp, fsdp     with 2+ GPUs: the same model through `lora-workbench train` on 2 processes
and prints one table: every figure with its baseline and their ratio, or why it did not run.
--dry-run runs the same code on the CPU with tiny sizes (the suite does, so the script cannot rot).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PREINSTALLED = ("torch", "transformers", "peft", "accelerate")
# import name -> distribution: what the workbench needs beyond the preinstalled four.
CORE = {"pydantic": "pydantic", "yaml": "pyyaml", "platformdirs": "platformdirs", "psutil": "psutil",
        "jinja2": "jinja2", "charset_normalizer": "charset-normalizer"}
TRAINER = {"trl": "trl", "datasets": "datasets"}
OPTIONAL = {"bitsandbytes": "bitsandbytes", "flash_attn": "flash-attn", "liger_kernel": "liger-kernel"}


def missing(names: dict[str, str]) -> list[str]:
    return [dist for module, dist in names.items() if importlib.util.find_spec(module) is None]


def carry_hint(dists: list[str]) -> str:
    version = f"{sys.version_info.major}{sys.version_info.minor}"
    return (f"on a connected machine: pip download --only-binary=:all: --python-version {version} "
            f"--platform manylinux2014_x86_64 -d wheels/ {' '.join(dists)}; copy wheels/ here, then "
            f"pip install --no-index --find-links wheels/ {' '.join(dists)}")


def preflight() -> tuple[list[str], list[str]]:
    """Print what is installed; returns (missing trainer packages, missing optional packages)."""
    absent = [name for name in PREINSTALLED if importlib.util.find_spec(name) is None]
    if absent:
        sys.exit(f"gpu_check needs {', '.join(PREINSTALLED)} preinstalled; missing: {', '.join(absent)}")
    core = missing(CORE)
    if core:
        sys.exit(f"the workbench core needs {', '.join(core)}: pip install them, or {carry_hint(core)}")
    trainer, optional = missing(TRAINER), missing(OPTIONAL)
    if trainer:
        print(f"MISSING {', '.join(trainer)}: the trainer path strictly needs trl (SFTTrainer, in engine/build.py) "
              f"and datasets (the splits, engine/sft_data.py); training stages will fail until then. To bring "
              f"them: {carry_hint(trainer)}", flush=True)
    if optional:
        print(f"optional, not installed: {', '.join(optional)} (QLoRA needs bitsandbytes; flash-attn and "
              f"liger-kernel only speed up)", flush=True)
    return trainer, optional


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def fmt(value, unit: str = "", digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}{unit}"


def selftest_rows(report: dict, name: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for stage in report["stages"]:
        label = f"{name} {stage['stage']}"
        if stage["status"] != "ok":
            rows.append((label, "FAILED", stage.get("reason") or "", ""))
        elif stage["stage"] == "model":
            rows.append((label, "ok", f"{stage['label']}, {stage['parameters'] / 1e6:.0f}M parameters", ""))
        elif stage["stage"] == "probe":
            peaks = ", ".join(f"{dtype} {tflops:.3g} TFLOP/s" for dtype, tflops in stage["tflops"].items())
            rows.append((label, "ok", f"matmul {peaks}", "the peak MFU is against"))
        else:
            memory = stage["memory"]
            rows.append((label, "ok", f"{fmt(stage['samples_per_s'])} samples/s, {fmt(stage['tokens_per_s'])} "
                                      f"tokens/s, MFU {fmt(stage['mfu'] and 100 * stage['mfu'], '%')}, {stage['attention']}",
                         f"memory estimate/measured {fmt(memory['ratio'])} ({memory['estimated_mb']:.0f}/"
                         f"{memory['measured_mb']:.0f} MiB)"))
    return rows


def throughput_row(workspace: Path, model_dir: Path, scratch: Path, dry_run: bool) -> tuple[str, str, str, str]:
    """train_throughput.py's workbench and tuned TRL baseline, each in its own process, same model/data/batch."""
    import train_throughput

    examples, batch, length = (8, 2, 64) if dry_run else (256, 8, 1024)
    args = argparse.Namespace(examples=examples, batch=batch, max_length=length, model=str(model_dir),
                              model_dir=str(model_dir), workspace=str(workspace), set=[], llamafactory_python=None,
                              trl_defaults=False, baseline_precision="auto")
    data = train_throughput.write_dataset(scratch / "throughput-data", examples)
    try:
        base = train_throughput.spawn(args, "baseline", data, scratch / "baseline")
        ours = train_throughput.spawn(args, "workbench", data, scratch / "workbench")
    except SystemExit as failure:  # spawn exits with the child's stderr tail
        return ("throughput", "FAILED", str(failure).strip().splitlines()[-1][:200], "")
    ratio = ours["samples_per_s"] / base["samples_per_s"]
    return ("throughput", "ok", f"workbench {fmt(ours['samples_per_s'])} samples/s ({ours['settings']})",
            f"plain TRL {fmt(base['samples_per_s'])} samples/s ({base['settings']}): ratio {ratio:.2f}x")


def distributed_rows(workspace: Path, model_dir: Path, gpus: int) -> list[tuple[str, str, str, str]]:
    """DDP and FSDP over two GPUs through `lora-workbench train` (the real launcher and accelerate)."""
    if gpus < 2:
        return [(name, "skipped", f"{gpus} GPU(s): needs 2+", "") for name in ("ddp", "fsdp")]
    from workbench.core.events import read_events

    import train_throughput

    data = train_throughput.write_dataset(workspace / "datasets" / "gpu-check", 64)
    rows = []
    for strategy in ("ddp", "fsdp"):
        run_id = f"gpu-check-{strategy}"
        done = subprocess.run([sys.executable, "-m", "workbench", "--workspace", str(workspace), "train",
                               "--preset", "llama-lora", "--data", str(data), "--model", str(model_dir),
                               "--max-steps", "8", "--run-id", run_id, "--set", "distributed.num_processes=2",
                               "--set", f"distributed.strategy={strategy}", "--set", "training.eval_strategy=no",
                               "--set", "training.report_to_tensorboard=false"],
                              capture_output=True, text=True)
        steps = [e for e in read_events(workspace / "runs" / run_id / "events.jsonl") if e["type"] == "step"]
        if done.returncode != 0 or not steps:
            rows.append((strategy, "FAILED", (done.stderr.strip().splitlines() or ["no output"])[-1][:200], ""))
            continue
        rows.append((strategy, "ok", f"8 steps on 2 GPUs, {fmt(steps[-1].get('tokens_per_s'))} tokens/s",
                     f"peak VRAM per GPU {fmt(steps[-1].get('vram_peak_mb'), ' MiB')}"))
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", help="workspace for logs and the DDP/FSDP runs (default: a temporary one)")
    parser.add_argument("--dry-run", action="store_true", help="the CPU, tiny sizes: checks the script, measures nothing")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer_missing, _ = preflight()
    import torch

    from workbench.core.selftest import METHODS, SIZES, run_selftest
    from workbench.engine.tiny import build_tiny_model

    gpus = gpu_count()
    if not gpus and not args.dry_run:
        sys.exit("no CUDA GPU visible; --dry-run checks the script on the CPU")
    device = torch.cuda.get_device_name(0) if gpus else "cpu"
    print(f"gpu_check on {device} x{gpus}, torch {torch.__version__}, CUDA {torch.version.cuda}"
          f"{' (dry run: tiny sizes, figures mean nothing)' if args.dry_run else ''}", flush=True)
    small, large = ("tiny", None) if args.dry_run else ("1b", "8b")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        scratch = Path(scratch)
        workspace = Path(args.workspace) if args.workspace else scratch / "workspace"
        model_dir = build_tiny_model(scratch / f"model-{small}", "llama",
                                     device="cuda" if gpus else "cpu",
                                     dtype=torch.bfloat16 if gpus else None, **SIZES[small].architecture)

        def progress(message: dict) -> None:
            if message.get("type") == "stage":
                print(f"  {message['stage']}: {message['status']} {message.get('reason') or ''}", flush=True)

        rows = [("check", "status", "figure", "baseline / ratio")]
        print("self-test …", flush=True)
        # A dry run leaves DoRA to the suite's own self-test (tests/test_selftest.py), and its QLoRA stage stands
        # for the large QLoRA check (the same call on a larger model).
        methods = ("lora", "qlora") if args.dry_run else METHODS
        rows += selftest_rows(run_selftest(workspace, model=str(model_dir), methods=methods, on_message=progress),
                              "self-test")
        if trainer_missing:
            rows.append(("throughput", "not run", f"needs {', '.join(trainer_missing)}", ""))
        else:
            print("throughput against plain TRL …", flush=True)
            rows.append(throughput_row(workspace, model_dir, scratch, args.dry_run))
        if args.dry_run:
            rows.append(("qlora-8b", "skipped", "dry run: the self-test's qlora stage is the same check", ""))
        else:
            print(f"QLoRA memory, {SIZES[large].label} …", flush=True)
            qlora = run_selftest(workspace, size=large, methods=("qlora",), on_message=progress)
            rows += [row for row in selftest_rows(qlora, "qlora-8b") if not row[0].endswith(("model", "probe"))]
        rows += distributed_rows(workspace, model_dir, gpus)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
