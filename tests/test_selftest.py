"""`doctor --selftest`: the real CPU self-test on a tiny random model, and its parent's bookkeeping."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from workbench.core import selftest
from workbench.core.memory import shape_from_config
from workbench.core.selftest import SelftestRun, format_selftest, training_flops_per_token

NUMBERS = ("samples_per_s", "tokens_per_s", "mfu", "model_tflops", "peak_tflops")


@pytest.mark.slow
def test_doctor_selftest_json_on_cpu_with_bitsandbytes_missing(workspace):
    """Every stage is reported; LoRA and DoRA train, pause, resume and generate with measured numbers; QLoRA
    fails with its reason (bitsandbytes hidden in the worker) while the others still run."""
    env = {**os.environ, selftest.SIMULATE_MISSING_ENV: "bitsandbytes"}
    done = subprocess.run(
        [sys.executable, "-m", "workbench", "--workspace", str(workspace.root), "doctor", "--selftest", "--json",
         "--size", "tiny"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 1, done.stderr[-3000:]  # a failed stage fails the self-test
    report = json.loads(done.stdout)
    stages = {stage["stage"]: stage for stage in report["stages"]}
    assert list(stages) == ["model", "probe", "lora", "qlora", "dora"]
    assert report["ok"] is False and report["device"] == "cpu"
    assert stages["model"]["status"] == "ok" and stages["model"]["parameters"] > 0
    assert stages["probe"]["status"] == "ok" and all(v > 0 for v in stages["probe"]["tflops"].values())

    qlora = stages["qlora"]
    assert qlora["status"] == "failed" and "bitsandbytes" in qlora["reason"] and "\n" not in qlora["reason"]

    for name in ("lora", "dora"):
        stage = stages[name]
        assert stage["status"] == "ok", stage["reason"]
        assert all(stage[key] is not None and stage[key] > 0 for key in NUMBERS), stage
        assert 0 < stage["mfu"] < 1
        assert stage["steps"] == selftest.SIZES["tiny"].steps
        assert stage["paused_at_step"] == 1  # asked before the run: taken at the end of step 1
        memory = stage["memory"]
        assert memory["measured_mb"] > 0 and memory["estimated_mb"] > 0
        assert memory["ratio"] == pytest.approx(memory["estimated_mb"] / memory["measured_mb"])
        assert memory["basis"] == "peak RSS (VmHWM)" and memory["terms"] == {}  # parts: GPU only
        assert stage["attention"] and stage["liger"] is False
        generation = stage["generation"]
        assert generation["adapter_changes_logits"] and generation["adapter_logit_delta"] > 0
        assert isinstance(generation["base"], str) and isinstance(generation["tuned"], str)
    assert stages["dora"]["preset"] == "llama-dora" and stages["lora"]["preset"] == "llama-lora"

    # Progress arrived as JSON lines while it ran: steps of each method, the pause, then the stage results.
    progress = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    lora_steps = [m["step"] for m in progress if m["type"] == "progress" and m["stage"] == "lora" and "step" in m]
    assert lora_steps == list(range(1, selftest.SIZES["tiny"].steps + 1))
    assert any(m["type"] == "progress" and m["message"].startswith("paused at step") for m in progress)
    assert [m["stage"] for m in progress if m["type"] == "stage"] == list(stages)
    # The runs lived in a temporary workspace, not the user's.
    assert not workspace.runs.exists() or not any(workspace.runs.iterdir())


class ScriptedChild:
    """Stands in for the engine worker: plays one script per start, recording its arguments."""

    scripts: list[list[dict]] = []
    started: list[list[str]] = []

    def __init__(self, module, args, log_path=None):
        assert module == "workbench.engine.selftest"
        self.started.append(args)
        self.script = self.scripts.pop(0)

    def messages(self):
        yield from self.script

    def close(self):
        pass


def ok(stage, **fields):
    return {"type": "stage", "stage": stage, "status": "ok", "reason": None, **fields}


def test_a_worker_that_dies_fails_its_stage_and_a_fresh_worker_runs_the_rest(monkeypatch, tmp_path):
    import workbench.core.jsonproc

    model = ok("model", model_dir="/tmp/m", size="tiny", device="cpu", label="tiny", spec="random tiny",
               parameters=1000, architecture="llama")
    probe = ok("probe", matrix=64, tflops={"fp32": 0.1})
    ScriptedChild.started = []
    ScriptedChild.scripts = [
        [model, probe, {"type": "stage_start", "stage": "lora"},
         {"type": "error", "message": "worker exited with code -11: Segmentation fault"}],
        [model, probe, ok("qlora"), {"type": "stage_start", "stage": "dora"}, ok("dora")],
    ]
    monkeypatch.setattr(workbench.core.jsonproc, "JsonLineProcess", ScriptedChild)
    seen = []
    report = SelftestRun(tmp_path, on_message=seen.append).run()
    assert [stage["status"] for stage in report["stages"]] == ["ok", "ok", "failed", "ok", "ok"]
    assert report["stages"][2]["reason"] == "worker exited with code -11: Segmentation fault"
    first, second = ScriptedChild.started
    assert first[first.index("--methods") + 1] == "lora,qlora,dora" and "--model-dir" not in first
    assert second[second.index("--methods") + 1] == "qlora,dora"
    assert second[second.index("--model-dir") + 1] == "/tmp/m" and second[second.index("--size") + 1] == "tiny"
    assert any(m.get("stage") == "lora" and m.get("status") == "failed" for m in seen)
    assert not report["ok"]


def test_a_failed_model_stage_reports_every_other_stage_not_run(monkeypatch, tmp_path):
    import workbench.core.jsonproc

    ScriptedChild.started = []
    ScriptedChild.scripts = [[{"type": "stage", "stage": "model", "status": "failed", "reason": "no disk"}]]
    monkeypatch.setattr(workbench.core.jsonproc, "JsonLineProcess", ScriptedChild)
    report = SelftestRun(tmp_path).run()
    assert [s["stage"] for s in report["stages"]] == ["model", "probe", "lora", "qlora", "dora"]
    assert all(s["reason"] == "not run: the model stage failed (no disk)" for s in report["stages"][1:])
    assert len(ScriptedChild.started) == 1
    assert "model  failed: no disk" in format_selftest(report)


def test_model_flops_per_token_of_smollm2():
    """4 x the matmul parameters (forward + input gradients through frozen weights) plus the adapter's
    6 x and causal attention: SmolLM2-135M has 106.2M parameters in its projections and 28.3M in its head."""
    from workbench.core.family import ALIAS_CONFIGS

    shape = shape_from_config(ALIAS_CONFIGS["smollm2-135m"])
    matmul = 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536) + 49152 * 576
    attention = 2 * 2 * 30 * 576 * 256 / 2
    assert training_flops_per_token(shape, 256, 4_884_480) == 4 * matmul + 3 * attention + 6 * 4_884_480


def test_throughput_leaves_out_the_first_step_and_the_pause():
    pytest.importorskip("torch")
    from workbench.core.events import parse_event
    from workbench.engine.selftest import throughput

    events = [parse_event(raw) for raw in [{"type": "start", "time": 0.0}] + [
        {"type": "step", "step": step, "time": time, "tokens_seen": 100 * step}
        for step, time in ((1, 5.0), (2, 6.0), (3, 7.0), (4, 60.0), (5, 61.0))
    ]]
    speed = throughput(events, batch=2, paused_at=3)
    assert speed == {"samples_per_s": 6 / 3, "tokens_per_s": 300 / 3}


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run: the GPU script's whole path on the CPU with tiny sizes, one table."""
    from conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run",
                           "--workspace", str(tmp_path / "ws")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("check "))):]
    rows = {line.split("  ")[0].strip(): line for line in table[1:]}
    assert set(rows) == {"self-test model", "self-test probe", "self-test lora", "self-test qlora", "throughput",
                         "qlora-8b", "ddp", "fsdp"}
    assert " ok " in rows["self-test lora"] and "memory estimate/measured" in rows["self-test lora"]
    assert " ok " in rows["throughput"] and "plain TRL" in rows["throughput"] and "ratio" in rows["throughput"]
    assert "skipped" in rows["ddp"] and "needs 2+" in rows["ddp"]


def test_selftest_options_without_selftest_are_a_user_error(workspace, capsys):
    from workbench.cli import main

    assert main(["--workspace", str(workspace.root), "doctor", "--size", "tiny"]) == 2
    assert capsys.readouterr().err.strip() == "error: --model and --size go with --selftest"
    assert main(["--workspace", str(workspace.root), "doctor", "--selftest", "--model", "x", "--size", "tiny"]) == 2
    assert "does not go with --model" in capsys.readouterr().err
