"""`doctor --json` on a CPU machine: every field present, GPU fields null with a reason."""

import json
import subprocess
import sys

from workbench.core.hardware import format_report, readiness


def test_doctor_json_has_every_field_on_cpu(workspace):
    done = subprocess.run(
        [sys.executable, "-m", "workbench", "--workspace", str(workspace.root), "doctor", "--json"],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"python", "packages", "torch", "bitsandbytes", "engine_reason", "gpus", "cpu", "disk",
                           "hub", "readiness"}
    assert report["python"]["version"].count(".") == 2
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "textual"):
        assert report["packages"][name], name
    assert "deepspeed" in report["packages"]  # optional packages are listed, null when absent
    torch = report["torch"]
    assert set(torch) >= {"version", "cuda_build", "cuda_available", "device_count", "devices", "nccl_available"}
    assert torch["cuda_available"] is False and torch["device_count"] == 0 and torch["devices"] == []
    assert report["bitsandbytes"]["backend"] == "CPU"
    gpus = report["gpus"]
    assert gpus["devices"] is None and gpus["driver_version"] is None and gpus["cuda_driver_version"] is None
    assert gpus["reason"]
    assert report["cpu"]["logical_cores"] >= 1 and report["cpu"]["ram_total_mb"] > 0
    assert report["disk"]["path"] == str(workspace.root) and report["disk"]["free_gb"] >= 0
    assert report["readiness"]["multi_gpu"]["ready"] is False
    assert all(p["fix"] for p in report["readiness"]["multi_gpu"]["problems"])
    assert any("slowly" in note for note in report["readiness"]["qlora"]["notes"])
    text = "\n".join(format_report(report))
    assert "multi-GPU" in text and "fix:" in text


def test_everything_but_the_engine_probe_runs_without_importing_torch(workspace):
    """The torch part is a child process (covered above); the rest must not pull torch in."""
    code = (
        "import sys; from pathlib import Path; from workbench.core.hardware import doctor_report; "
        f"r = doctor_report(Path({str(workspace.root)!r}), engine={{'torch': None, 'reason': 'skipped'}}); "
        "assert r['cpu']['ram_total_mb'] and r['packages']['torch'] and r['gpus']['reason']; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_readiness_names_the_fix_for_a_cpu_only_torch_on_a_gpu_machine():
    packages = {"bitsandbytes": "0.50", "accelerate": "1.15"}
    gpus = {"devices": [{"index": 0}, {"index": 1}]}
    engine = {"torch": {"cuda_available": False, "cuda_build": None, "device_count": 0}, "bitsandbytes": {}}
    result = readiness(packages, gpus, engine)
    assert not result["qlora"]["ready"]
    assert "CPU-only build" in result["qlora"]["problems"][0]["problem"]
    assert "download.pytorch.org" in result["qlora"]["problems"][0]["fix"]

    two_gpus = {"torch": {"cuda_available": True, "cuda_build": "12.8", "device_count": 2, "nccl_available": True},
                "bitsandbytes": {"native_library": True}}
    ready = readiness(packages, gpus, two_gpus)
    assert ready["qlora"]["ready"] and ready["multi_gpu"]["ready"]
    no_bnb = readiness({"accelerate": "1.15"}, gpus, two_gpus)
    assert no_bnb["qlora"]["problems"][0]["fix"] == "pip install bitsandbytes"
