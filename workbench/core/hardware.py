"""Environment probes for `doctor` and the System screen, without importing torch in this process.

Python, package versions (importlib.metadata), GPUs through NVML (driver, name, memory), CPU/RAM
(psutil) and free disk are read directly. torch's CUDA build and devices and the bitsandbytes backend
are probed in a child process (`python -m workbench.core.hardware --engine-probe`), so the TUI never
imports torch and a broken CUDA install cannot take it down. Anything not measurable is null with a
`reason` next to it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from workbench.core.hub import hub_status

# Distribution names (as pip knows them); the optional ones are reported as null when absent.
PACKAGES = (
    "torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "safetensors",
    "tokenizers", "sentencepiece", "gguf", "textual", "textual-plotext", "pydantic", "pyyaml", "psutil",
    "nvidia-ml-py", "rouge-score", "sacrebleu", "tensorboard", "deepspeed", "flash-attn", "liger-kernel",
)
ENGINE_PROBE_TIMEOUT_S = 120.0


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def probe_python() -> dict[str, Any]:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
    }


def _decode(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def probe_gpus() -> dict[str, Any]:
    """NVIDIA GPUs via NVML: driver version and per-device name/memory/utilization."""
    try:
        import pynvml
    except ImportError:
        return {"driver_version": None, "cuda_driver_version": None, "devices": None,
                "reason": "nvidia-ml-py is not installed (pip install nvidia-ml-py)"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return {"driver_version": None, "cuda_driver_version": None, "devices": None,
                "reason": f"no NVIDIA driver reachable through NVML ({error}); CPU-only machine?"}
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except pynvml.NVMLError:
                utilization = None
            devices.append({
                "index": index,
                "name": _decode(pynvml.nvmlDeviceGetName(handle)),
                "memory_total_mb": round(memory.total / 2**20),
                "memory_used_mb": round(memory.used / 2**20),
                "memory_free_mb": round(memory.free / 2**20),
                "utilization_pct": utilization,
            })
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        return {
            "driver_version": _decode(pynvml.nvmlSystemGetDriverVersion()),
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}",
            "devices": devices,
            "reason": None if devices else "the NVIDIA driver reports no GPUs",
        }
    finally:
        pynvml.nvmlShutdown()


def probe_cpu_ram() -> dict[str, Any]:
    import psutil

    memory = psutil.virtual_memory()
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_total_mb": round(memory.total / 2**20),
        "ram_available_mb": round(memory.available / 2**20),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def probe_disk(path: Path) -> dict[str, Any]:
    """Free space where the workspace lives (its nearest existing ancestor if not created yet)."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    return {"path": str(path), "free_gb": round(usage.free / 1e9, 1), "total_gb": round(usage.total / 1e9, 1)}


def _engine_probe() -> dict[str, Any]:
    """Runs in the child process: torch's build and devices, the bitsandbytes backend."""
    result: dict[str, Any] = {"torch": None, "bitsandbytes": None, "reason": None}
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - any import failure is the finding
        result["reason"] = f"torch does not import: {type(error).__name__}: {error}"
        return result
    cuda_available = torch.cuda.is_available()
    devices = []
    for index in range(torch.cuda.device_count() if cuda_available else 0):
        props = torch.cuda.get_device_properties(index)
        devices.append({
            "index": index,
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_total_mb": round(props.total_memory / 2**20),
            "bf16": props.major >= 8,
        })
    distributed = torch.distributed.is_available()
    result["torch"] = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "hip_build": getattr(torch.version, "hip", None),
        "cuda_available": cuda_available,
        "device_count": len(devices),
        "devices": devices,
        "nccl_available": bool(distributed and torch.distributed.is_nccl_available()),
        "gloo_available": bool(distributed and torch.distributed.is_gloo_available()),
    }
    try:
        import bitsandbytes
        from bitsandbytes import cextension

        native = not type(cextension.lib).__name__.startswith("ErrorHandler")
        result["bitsandbytes"] = {
            "version": bitsandbytes.__version__,
            "backend": getattr(cextension, "BNB_BACKEND", None),
            "native_library": native,
        }
    except Exception as error:  # noqa: BLE001
        result["bitsandbytes"] = {"version": None, "backend": None, "native_library": False,
                                  "reason": f"{type(error).__name__}: {error}"}
    return result


def probe_engine(timeout_s: float = ENGINE_PROBE_TIMEOUT_S) -> dict[str, Any]:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "workbench.core.hardware", "--engine-probe"],
            capture_output=True, text=True, timeout=timeout_s, env=env,
        )
    except subprocess.TimeoutExpired:
        return {"torch": None, "bitsandbytes": None, "reason": f"torch probe did not finish in {timeout_s:.0f}s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"torch": None, "bitsandbytes": None, "reason": f"torch probe failed (exit {done.returncode}): {last}"}
    return json.loads(lines[-1])


def readiness(packages: dict[str, str | None], gpus: dict[str, Any], engine: dict[str, Any]) -> dict[str, Any]:
    """What QLoRA and multi-GPU training still need on this machine, each problem with its fix."""
    torch_info = engine.get("torch") or {}
    bnb = engine.get("bitsandbytes") or {}
    cuda = bool(torch_info.get("cuda_available"))
    nvml_gpus = len(gpus.get("devices") or [])

    qlora: list[dict[str, str]] = []
    notes: list[str] = []
    if not packages.get("bitsandbytes"):
        qlora.append({"problem": "bitsandbytes is not installed", "fix": "pip install bitsandbytes"})
    elif bnb and not bnb.get("native_library", True):
        qlora.append({"problem": "bitsandbytes has no native library for this platform",
                      "fix": "pip install --force-reinstall bitsandbytes (a wheel matching your CUDA)"})
    if not torch_info:
        qlora.append({"problem": engine.get("reason") or "torch is not usable",
                      "fix": "install torch: scripts/setup (picks the CUDA or CPU build)"})
    elif not cuda:
        if nvml_gpus and not torch_info.get("cuda_build"):
            qlora.append({"problem": f"{nvml_gpus} NVIDIA GPU(s) present but torch is a CPU-only build",
                          "fix": "pip install torch --index-url https://download.pytorch.org/whl/cu128"})
        else:
            notes.append("no CUDA GPU: 4-bit QLoRA runs on the CPU through bitsandbytes, but slowly")

    multi: list[dict[str, str]] = []
    device_count = torch_info.get("device_count") or 0
    if device_count < 2:
        have = f"{device_count} CUDA device" + ("" if device_count == 1 else "s")
        multi.append({"problem": f"multi-GPU needs at least 2 CUDA devices; torch sees {have}",
                      "fix": "run on a multi-GPU machine, or use distributed.num_processes=2 on the CPU "
                             "(gloo) to test the setup"})
    if not packages.get("accelerate"):
        multi.append({"problem": "accelerate is not installed", "fix": "pip install accelerate"})
    if torch_info and cuda and not torch_info.get("nccl_available"):
        multi.append({"problem": "torch was built without NCCL", "fix": "install the official CUDA build of torch"})
    return {
        "qlora": {"ready": not qlora, "problems": qlora, "notes": notes},
        "multi_gpu": {"ready": not multi, "problems": multi},
    }


def doctor_report(workspace_root: Path, engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full report; `engine` is the torch/bitsandbytes probe, run in a child process unless given."""
    packages = package_versions()
    gpus = probe_gpus()
    engine = engine if engine is not None else probe_engine()
    return {
        "python": probe_python(),
        "packages": packages,
        "torch": engine.get("torch"),
        "bitsandbytes": engine.get("bitsandbytes"),
        "engine_reason": engine.get("reason"),
        "gpus": gpus,
        "cpu": probe_cpu_ram(),
        "disk": probe_disk(workspace_root),
        "hub": hub_status(),
        "readiness": readiness(packages, gpus, engine),
    }


def format_report(report: dict) -> list[str]:
    """Plain-text lines shared by `doctor` and the System screen."""
    python, torch, bnb, gpus, cpu, disk = (
        report["python"], report["torch"], report["bitsandbytes"], report["gpus"], report["cpu"], report["disk"]
    )
    lines = [f"python       {python['version']} ({python['executable']})"]
    if torch:
        cuda = torch["cuda_build"] or "none (CPU build)"
        lines.append(f"torch        {torch['version']}  CUDA build: {cuda}  CUDA available: {torch['cuda_available']}"
                     f"  devices: {torch['device_count']}")
    else:
        lines.append(f"torch        unavailable: {report['engine_reason']}")
    if bnb:
        lines.append(f"bitsandbytes {bnb['version']}  backend: {bnb['backend']}")
    if gpus["devices"]:
        lines.append(f"driver       {gpus['driver_version']} (CUDA {gpus['cuda_driver_version']})")
        for gpu in gpus["devices"]:
            lines.append(f"gpu {gpu['index']}        {gpu['name']}  {gpu['memory_used_mb']}/{gpu['memory_total_mb']} MiB used")
    else:
        lines.append(f"gpu          none: {gpus['reason']}")
    lines.append(f"cpu          {cpu['cpu_model'] or '?'}  {cpu['logical_cores']} logical cores  "
                 f"RAM {cpu['ram_available_mb']}/{cpu['ram_total_mb']} MiB free")
    lines.append(f"disk         {disk['free_gb']} GB free of {disk['total_gb']} GB at {disk['path']}")
    if "hub" in report:
        hub = report["hub"]
        lines.append(f"hub          {hub['endpoint']}  token: {'set' if hub['token'] else 'none (gated models: hf auth login)'}"
                     f"  cache: {hub['cache_dir']} ({hub['cache_free_gb']} GB free){'  offline' if hub['offline'] else ''}")
    lines.append("packages     " + ", ".join(
        f"{name} {version}" for name, version in report["packages"].items() if version))
    missing = [name for name, version in report["packages"].items() if not version]
    if missing:
        lines.append(f"not installed {', '.join(missing)}")
    for name, label in (("qlora", "QLoRA"), ("multi_gpu", "multi-GPU")):
        check = report["readiness"][name]
        lines.append(f"{label:12} {'ready' if check['ready'] else 'not ready'}")
        for problem in check["problems"]:
            lines.append(f"  - {problem['problem']}; fix: {problem['fix']}")
        for note in check.get("notes", []):
            lines.append(f"  - {note}")
    return lines


if __name__ == "__main__":
    # --engine-probe: the torch part only (for doctor_report in a torch-free process).
    # --report ROOT: the whole report as one JSON-line message, for the System screen, which runs it as a
    # killable child (core/jsonproc.py) so that leaving the screen never waits for torch to import.
    if sys.argv[1:] == ["--engine-probe"]:
        print(json.dumps(_engine_probe()))
    elif len(sys.argv) == 3 and sys.argv[1] == "--report":
        print(json.dumps({"type": "result", "report": doctor_report(Path(sys.argv[2]), engine=_engine_probe())}))
    else:
        sys.exit("usage: python -m workbench.core.hardware --engine-probe | --report WORKSPACE")
