"""The System screen with a stubbed doctor report and a stubbed model-analysis worker."""

from __future__ import annotations


from textual.app import App
from textual.widgets import DataTable, Input, Static, TabbedContent

from tui_helpers import FakeJob, wait_until
from workbench.core.hardware import readiness
from workbench.ui.screens.system import SystemScreen


def cpu_report(root):
    packages = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "bitsandbytes": "0.50.2", "accelerate": "1.15.0",
                "deepspeed": None}
    gpus = {"driver_version": None, "cuda_driver_version": None, "devices": None, "reason": "no NVIDIA driver"}
    engine = {"torch": {"version": "2.13.0+cpu", "cuda_build": None, "cuda_available": False, "device_count": 0,
                        "devices": [], "nccl_available": False},
              "bitsandbytes": {"version": "0.50.2", "backend": "CPU", "native_library": True}, "reason": None}
    return {"python": {"version": "3.11.7", "executable": "/usr/bin/python3"}, "packages": packages,
            "torch": engine["torch"], "bitsandbytes": engine["bitsandbytes"], "engine_reason": None, "gpus": gpus,
            "cpu": {"cpu_model": "AMD EPYC", "logical_cores": 2, "physical_cores": 2, "ram_total_mb": 24000,
                    "ram_available_mb": 20000},
            "disk": {"path": str(root), "free_gb": 80.0, "total_gb": 270.0},
            "readiness": readiness(packages, gpus, engine)}


ANALYSIS = {
    "type": "result", "model": "org/kogpt2", "model_type": "gpt2", "architecture": "GPT2LMHeadModel",
    "num_parameters": 125_164_032, "rank": 16,
    "linear_modules": [
        {"name": "c_attn", "type": "Conv1D", "count": 12, "role": "attention", "shapes": [[768, 2304]],
         "lora_parameters": 589_824, "output_head": False},
        {"name": "c_proj", "type": "Conv1D", "count": 24, "role": "attention+mlp", "shapes": [[768, 768], [3072, 768]],
         "lora_parameters": 1_032_192, "output_head": False},
        {"name": "lm_head", "type": "Linear", "count": 1, "role": "other", "shapes": [[768, 51200]],
         "lora_parameters": 831_488, "output_head": True},
    ],
    "by_type": {"Conv1D": ["c_attn", "c_proj"], "Linear": ["lm_head"]},
    "suggested_target_modules": ["c_attn", "c_proj"], "attention_only_target_modules": ["c_attn"],
    "lora_parameters_suggested": 1_622_016,
    "notes": ["Conv1D layers (GPT-2 style) store weights transposed: set lora.fan_in_fan_out=true"],
}


class SystemApp(App):
    """Hands out the doctor job first (the screen checks the environment on mount), then `jobs` in order."""

    def __init__(self, workspace, jobs, doctor=None):
        super().__init__()
        self.workspace = workspace
        report = {"type": "result", "report": cpu_report(workspace.root)}
        self.jobs = [doctor or FakeJob(held=False, script=[report]), *jobs]
        self.started = []

    def factory(self, module, args, log_path):
        self.started.append((module, args))
        return self.jobs.pop(0)

    def on_mount(self):
        self.push_screen(SystemScreen(job_factory=self.factory))


def text(screen, selector):
    return str(screen.query_one(selector, Static).render())


async def test_environment_tab_shows_the_doctor_report_with_fixes(workspace):
    app = SystemApp(workspace, [])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.report is not None, what="the doctor report")
        assert app.started[0] == ("workbench.core.hardware", ["--report", str(workspace.root)])
        doctor = text(screen, "#doctor")
        assert "torch        2.13.0+cpu" in doctor
        assert "gpu          none: no NVIDIA driver" in doctor
        assert "multi-GPU    not ready" in doctor and "fix:" in doctor
        assert "not installed deepspeed" in doctor


async def test_failing_probe_is_shown_and_f5_checks_again(workspace):
    crashed = FakeJob(held=False, script=[{"type": "error", "message": "worker exited with code -11: Segmentation fault"}])
    again = FakeJob(held=False, script=[{"type": "result", "report": cpu_report(workspace.root)}])
    app = SystemApp(workspace, [again], doctor=crashed)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.doctor is None and screen.doctor_failed, what="the error")
        assert "failed: worker exited with code -11" in text(screen, "#doctor")
        await pilot.press("f5")
        await wait_until(pilot, lambda: screen.report is not None, what="the second check")
        assert "QLoRA        ready" in text(screen, "#doctor")


async def test_model_structure_analysis_lists_modules_and_suggests_targets(workspace):
    app = SystemApp(workspace, [FakeJob(held=False, script=[{"type": "status", "message": "reading config"}, ANALYSIS]),
                                FakeJob(held=False, script=[{"type": "error", "message": "model 'nope': not found", "user_error": True},
                                         {"type": "error", "message": "worker exited with code 2"}])])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        model = screen.query_one("#model", Input)
        assert model.value == "smollm2-135m"
        model.value = "org/kogpt2"
        await pilot.press("ctrl+r")
        assert screen.query_one(TabbedContent).active == "structure"
        module, args = app.started[1]
        assert module == "workbench.engine.inspect_model" and args[0] == "org/kogpt2"
        assert args[args.index("--rank") + 1] == "16"
        await wait_until(pilot, lambda: screen.client is None and screen.analysis, what="the analysis")
        table = screen.query_one("#modules", DataTable)
        assert table.row_count == 3
        assert table.get_row("Conv1D.c_proj")[2:5] == ["24", "attention+mlp", "768→768, 3072→768"]
        assert table.get_row("Linear.lm_head")[3] == "output head"
        suggestion = text(screen, "#suggestion")
        assert "['c_attn', 'c_proj']" in suggestion and "fan_in_fan_out" in suggestion
        assert "Conv1D: 2 names" in text(screen, "#inspect-status")

        model.value = "nope"
        model.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.client is None and screen.job_failed, what="the failure")
        assert text(screen, "#inspect-status") == "model 'nope': not found"
        assert table.row_count == 3  # the previous analysis stays

        screen.query_one("#rank", Input).value = "0"
        await pilot.press("ctrl+r")
        assert "r must be" in text(screen, "#inspect-status") and len(app.started) == 3


SELFTEST_REPORT_STAGES = [
    {"type": "stage", "stage": "model", "status": "ok", "reason": None, "spec": "random tiny", "label": "tiny llama",
     "parameters": 98624, "device": "cpu", "model_dir": "/tmp/m", "size": "tiny"},
    {"type": "stage", "stage": "probe", "status": "ok", "reason": None, "matrix": 1024, "tflops": {"bf16": 0.5}},
    {"type": "stage", "stage": "lora", "status": "ok", "reason": None, "samples_per_s": 1.5, "tokens_per_s": 96.0,
     "mfu": 0.012, "precision": "bf16", "paused_at_step": 3, "attention": "sdpa", "liger": False,
     "memory": {"ratio": 0.9, "estimated_mb": 90.0, "measured_mb": 100.0, "basis": "peak RSS (VmHWM)", "terms": {}}},
    {"type": "stage", "stage": "qlora", "status": "failed", "reason": "quantization needs bitsandbytes: pip install bitsandbytes"},
]


async def test_selftest_shows_progress_then_every_stage(workspace):
    """ctrl+s starts `python -m workbench.core.selftest` (stubbed): progress shows while it runs, a row per
    method as each ends, then the summary; a failed stage is shown with its reason."""
    stages = [*SELFTEST_REPORT_STAGES, {**SELFTEST_REPORT_STAGES[2], "stage": "dora", "mfu": 0.008}]
    report = {"device": "cpu", "model": {}, "stages": stages, "ok": False, "seconds": 42.0}
    job = FakeJob(held=True, script=[*stages[2:], {"type": "result", "report": report}])
    app = SystemApp(workspace, [job])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.report is not None, what="the doctor report")
        await pilot.press("ctrl+s")
        assert screen.query_one(TabbedContent).active == "selftest"
        assert app.started[1] == ("workbench.core.selftest", ["--workspace", str(workspace.root)])
        for message in [*stages[:2], {"type": "stage_start", "stage": "lora"},
                        {"type": "progress", "stage": "lora", "step": 2, "total": 4, "message": "step 2/4 loss 5.9"}]:
            job.outbox.put(message)
        await wait_until(pilot, lambda: text(screen, "#selftest-status") == "[lora] step 2/4 loss 5.9",
                         what="the progress line")
        assert screen.query_one("#selftest-progress").progress == 2  # model and probe done
        await pilot.press("ctrl+s")  # a second press while it runs starts nothing
        assert len(app.started) == 2
        job.release()
        await wait_until(pilot, lambda: screen.selftest is None and screen.selftest_report, what="the report")
        table = screen.query_one("#selftest-table", DataTable)
        assert table.row_count == 3
        assert table.get_row("lora")[:6] == ["lora", "ok", "1.5", "96", "1.2%", "0.90 (90/100 MiB)"]
        assert table.get_row("qlora")[1] == "failed" and "bitsandbytes" in table.get_row("qlora")[7]
        assert screen.query_one("#selftest-progress").progress == 5
        assert text(screen, "#selftest-status").startswith("self-test on cpu in 42s: FAILED stages below")
        assert "probe  matmul 1024x1024: bf16 0.5 TFLOP/s" in text(screen, "#selftest-text")
