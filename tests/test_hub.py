"""Hub models against a local Hub stand-in (tests/hub_server.py): pull with progress, the checks before a
download, resume of a dropped connection, listing and removal, and training on a repo id offline."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub_server import HubStandIn
from workbench.cli import main
from workbench.core import hub
from workbench.core.errors import UserError

REPO = "org/tiny-llama"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def repo_dir(tiny_llama, tmp_path) -> Path:
    """The tiny llama as a Hub repo, plus files a run never needs (pickle weights, a subfolder)."""
    directory = tmp_path / "repo"
    shutil.copytree(tiny_llama, directory)
    (directory / "pytorch_model.bin").write_bytes(b"pickle" * 100)
    (directory / "onnx").mkdir()
    (directory / "onnx" / "model.onnx").write_bytes(b"onnx")
    return directory


@pytest.fixture
def stand_in(repo_dir):
    server = HubStandIn(repos={REPO: repo_dir},
                        errors={"org/private": (401, "RepoNotFound"), "org/gated": (403, "GatedRepo")})
    server.url = server.start()
    yield server
    server.stop()


@pytest.fixture
def hub_env(stand_in, tmp_path, monkeypatch):
    """This process and its children talk to the stand-in and cache under tmp_path, with no token."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub read its constants at import; the in-process code asks these two functions.
    monkeypatch.setattr(hub, "endpoint", lambda: stand_in.url)
    monkeypatch.setattr(hub, "cache_dir", lambda: cache)
    monkeypatch.setattr(hub, "token_present", lambda: False)
    return cache


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, timeout=120)


def test_select_files_takes_safetensors_config_and_tokenizer_only():
    names = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "model.safetensors.index.json", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
             "README.md", "onnx/model.onnx", "original/consolidated.00.pth", "generation_config.json"]
    assert hub.select_files(names, allow_pickle=False) == [
        "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json",
        "tokenizer_config.json"]
    # Pickle weights only when allowed and nothing safer exists.
    assert "pytorch_model.bin" not in hub.select_files(names, allow_pickle=True)
    assert hub.select_files(["config.json", "pytorch_model.bin", "x.pth"], allow_pickle=True) == [
        "config.json", "pytorch_model.bin"]
    assert hub.select_files(["config.json", "pytorch_model.bin"], allow_pickle=False) == ["config.json"]


def test_pull_reports_growing_progress_and_leaves_only_needed_files_in_the_cache(hub_env, stand_in, repo_dir, workspace):
    result = cli("--workspace", str(workspace.root), "models", "pull", REPO, "--json")
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    downloads = [m for m in messages if m["type"] == "download"]
    done = [d["bytes_done"] for d in downloads]
    assert done == sorted(done) and done[0] == 0 and len(set(done)) >= 3
    expected = sum((repo_dir / name).stat().st_size for name in hub.select_files(
        [p.name for p in repo_dir.iterdir() if p.is_file()], allow_pickle=False))
    assert {d["bytes_total"] for d in downloads} == {expected} and done[-1] == expected
    assert all(d["repo"] == REPO for d in downloads) and downloads[-1]["bytes_per_s"] > 0
    assert messages[-1]["type"] == "done"
    snapshot = Path(messages[-1]["path"])
    assert snapshot.is_relative_to(hub_env)
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(
        p.name for p in repo_dir.iterdir() if p.is_file() and p.suffix != ".bin")
    for path in snapshot.iterdir():
        assert digest(path) == digest(repo_dir / path.name)
    fetched = {path for method, path, _ in stand_in.requests if method == "GET"}
    assert not any("pytorch_model.bin" in p or "onnx" in p for p in fetched)

    # A second pull downloads nothing; the model is listed with its family and exact parameter count.
    again = cli("--workspace", str(workspace.root), "models", "pull", REPO, "--json")
    assert again.returncode == 0 and '"download"' not in again.stdout
    listing = json.loads(cli("--workspace", str(workspace.root), "models", "list", "--json").stdout)
    (entry,) = listing
    from workbench.core.model_library import safetensors_parameters
    assert (entry["name"], entry["kind"], entry["family"]) == (REPO, "hub", "llama")
    assert entry["parameters"] == safetensors_parameters(repo_dir) > 0
    assert entry["size_bytes"] == expected


@pytest.mark.parametrize("repo, expected", [
    ("org/private", "is private or gated (HTTP 401) or does not exist: if you have access, log in with `hf auth login`"),
    ("org/gated", "is gated: accept its terms at"),
    ("org/missing", "does not exist on"),
])
def test_refusals_are_one_line_exit_2_and_write_nothing(hub_env, workspace, capsys, repo, expected):
    assert main(["--workspace", str(workspace.root), "models", "pull", repo]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and err.startswith(f"error: model '{repo}'")
    assert not hub_env.exists() or not any(p.is_file() for p in hub_env.rglob("*"))


def test_not_enough_disk_is_refused_before_the_download(hub_env, workspace, capsys, monkeypatch):
    monkeypatch.setattr(hub, "free_bytes", lambda path: 50_000)  # less than the weights + reserve
    assert main(["--workspace", str(workspace.root), "models", "pull", REPO]) == 2
    err = capsys.readouterr().err
    assert "not enough free disk" in err and "50.0 KB free" in err and err.count("\n") == 1
    assert not hub_env.exists() or not any(p.is_file() for p in hub_env.rglob("*"))


def test_no_network_names_the_offline_ways(tmp_path, workspace, capsys, monkeypatch):
    monkeypatch.setattr(hub, "endpoint", lambda: "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(hub, "cache_dir", lambda: tmp_path / "cache")
    assert main(["--workspace", str(workspace.root), "models", "pull", REPO]) == 2
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:9" in err and "works offline" in err and err.count("\n") == 1


def test_a_connection_dropped_mid_file_is_resumed_not_corrupted(hub_env, stand_in, repo_dir, monkeypatch):
    import huggingface_hub.constants

    # Real weights are written in 10 MB chunks, so a drop in a multi-GB shard leaves most of it on disk;
    # this tiny file needs small chunks for the same situation.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 8192)
    stand_in.drop_after["model.safetensors"] = 60_000
    events = []
    snapshot = hub.ensure_model(REPO, log=lambda message: None, report=events.append)
    ranges = [r for method, path, r in stand_in.requests if method == "GET" and path.endswith("model.safetensors")]
    assert ranges[0] is None and ranges[1] == "bytes=57344-"  # 7 whole chunks of 8192 were kept
    assert digest(snapshot / "model.safetensors") == digest(repo_dir / "model.safetensors")
    assert not list(hub_env.rglob("*.incomplete"))
    assert events[-1]["bytes_done"] == events[-1]["bytes_total"]


def test_an_interrupted_pull_continues_with_the_files_not_yet_downloaded(hub_env, stand_in, repo_dir):
    plan = hub.plan_download(REPO)
    stand_in.failing_files.add("tokenizer.json")  # the Hub fails mid-pull, after the weights
    with pytest.raises(UserError, match="downloading tokenizer.json failed .*run it again"):
        hub.download(plan)
    assert not list(hub_env.rglob("*.incomplete"))
    stand_in.failing_files.clear()
    stand_in.requests.clear()
    events = []
    snapshot = hub.ensure_model(REPO, log=lambda m: None, report=events.append)
    fetched = sorted(path.rsplit("/", 1)[1] for method, path, _ in stand_in.requests if "/resolve/" in path)
    assert fetched == ["tokenizer.json", "tokenizer.json", "tokenizer_config.json", "tokenizer_config.json"]  # HEAD+GET
    assert events[-1]["bytes_total"] == sum((repo_dir / n).stat().st_size for n in fetched[::2])
    assert hub.snapshot_complete(snapshot) and digest(snapshot / "tokenizer.json") == digest(repo_dir / "tokenizer.json")


def test_cached_model_is_used_offline(hub_env, stand_in, monkeypatch):
    pulled = hub.ensure_model(REPO, log=lambda m: None)
    stand_in.stop()
    notes = []
    assert hub.ensure_model(REPO, log=notes.append) == pulled
    assert notes and "unreachable: using the cached" in notes[0]


def test_rm_names_the_runs_using_the_model(hub_env, workspace, capsys, tiny_split):
    from workbench.core.newrun import create_run, resolve_config

    hub.ensure_model(REPO, log=lambda m: None)
    run = create_run(workspace, resolve_config(workspace, "llama-lora", str(tiny_split), REPO, [], 2), "uses-hub")
    assert main(["--workspace", str(workspace.root), "models", "list"]) == 0
    assert "uses-hub" in capsys.readouterr().out
    assert main(["--workspace", str(workspace.root), "models", "rm", REPO]) == 2  # no terminal, no --yes
    assert "pass --yes" in capsys.readouterr().err
    assert main(["--workspace", str(workspace.root), "models", "rm", REPO, "--yes"]) == 0
    assert f"runs using it: {run.run_id}" in capsys.readouterr().out
    assert not any(hub_env.glob("models--*"))


@pytest.mark.slow
def test_a_run_downloads_its_hub_model_then_trains_offline(hub_env, stand_in, workspace, tiny_split):
    from engine_helpers import start_run, wait_for_end
    from workbench.core.events import read_events

    first = start_run(workspace, REPO, tiny_split, max_steps=2, run_id="hub-online")
    assert wait_for_end(first)["status"] == "completed"
    downloads = [e for e in read_events(first.events_path) if e["type"] == "download"]
    assert downloads and downloads[-1]["bytes_done"] == downloads[-1]["bytes_total"] > 0
    assert [e["bytes_done"] for e in downloads] == sorted(e["bytes_done"] for e in downloads)

    stand_in.stop()
    second = start_run(workspace, REPO, tiny_split, max_steps=2, run_id="hub-offline")
    end = wait_for_end(second)
    assert end["status"] == "completed", end
    events = read_events(second.events_path)
    assert not [e for e in events if e["type"] == "download"]
    assert any("unreachable: using the cached" in str(e.get("message")) for e in events)


def test_pickle_only_repo_is_refused_unless_allowed(hub_env, stand_in, tmp_path):
    pickle_repo = tmp_path / "pickle-repo"
    pickle_repo.mkdir()
    (pickle_repo / "config.json").write_text('{"model_type": "gpt2"}')
    (pickle_repo / "pytorch_model.bin").write_bytes(b"\x80" * 1000)
    stand_in.repos["org/pickled"] = pickle_repo
    with pytest.raises(UserError, match="no safetensors weights.*model.allow_pickle_weights=true"):
        hub.plan_download("org/pickled")
    snapshot = hub.ensure_model("org/pickled", allow_pickle=True, log=lambda m: None)
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "pytorch_model.bin"]


def test_doctor_reports_the_token_presence_never_its_value(tmp_path, monkeypatch):
    from workbench.core.hardware import doctor_report, format_report

    secret = "hf_" + "x" * 30
    monkeypatch.setenv("HF_TOKEN", secret)
    report = doctor_report(tmp_path, engine={"torch": None, "reason": "skipped"})
    text = "\n".join(format_report(report))
    assert report["hub"]["token"] is True and "token: set" in text
    assert secret not in text and secret not in json.dumps(report)
    assert f"cache: {report['hub']['cache_dir']}" in text and report["hub"]["cache_free_gb"] > 0
    monkeypatch.setattr(hub, "token_present", lambda: False)
    assert "token: none (gated models: hf auth login)" in "\n".join(format_report(doctor_report(
        tmp_path, engine={"torch": None, "reason": "skipped"})))


def test_engine_workers_get_download_progress_as_loading_lines(hub_env, workspace):
    """Playground, eval and export pass only `log`: the download shows there as progress lines."""
    from workbench.core.config import ModelSection
    from workbench.engine.models import resolve_and_materialize

    lines = []
    source = resolve_and_materialize(REPO, workspace, log=lines.append, model=ModelSection(name_or_path=REPO))
    assert hub.snapshot_complete(Path(source)) and Path(source).is_relative_to(hub_env)
    progress = [line for line in lines if line.startswith(f"downloading {REPO} ") and "%" in line]
    assert progress[0].startswith(f"downloading {REPO} 0%") and " 100% " in progress[-1]


def test_train_refuses_a_missing_hub_model_before_creating_the_run(hub_env, workspace, tiny_split, capsys):
    assert main(["--workspace", str(workspace.root), "train", "--preset", "llama-lora", "--data", str(tiny_split),
                 "--model", "org/missing", "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "model 'org/missing' does not exist on" in err and err.count("\n") == 1
    assert not workspace.runs.exists() or not any(workspace.runs.iterdir())


def test_partials_of_a_killed_download_are_removed_unless_in_progress(hub_env, stand_in, repo_dir):
    from filelock import FileLock

    plan = hub.plan_download(REPO)
    blobs = hub_env / plan.folder / "blobs"
    blobs.mkdir(parents=True)
    stale, active = blobs / "aaaa.1234abcd.incomplete", blobs / "bbbb.5678abcd.incomplete"
    stale.write_bytes(b"x" * 1000)
    active.write_bytes(b"y" * 10)
    (hub_env / ".locks" / plan.folder).mkdir(parents=True)
    with FileLock(hub_env / ".locks" / plan.folder / "bbbb.lock"):  # another process is downloading bbbb
        assert hub.remove_stale_partials(plan) == 1000
    assert not stale.exists() and active.exists()


def test_a_pull_killed_mid_file_is_completed_by_the_next_pull(hub_env, stand_in, repo_dir, workspace):
    import signal

    from engine_helpers import wait_until

    stand_in.stall_after["model.safetensors"] = 40_000
    pull = subprocess.Popen([sys.executable, "-m", "workbench", "--workspace", str(workspace.root), "models", "pull",
                             REPO, "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        weights_partial = f"{digest(repo_dir / 'model.safetensors')}.*.incomplete"  # the stand-in's ETag
        wait_until(lambda: list(hub_env.rglob(weights_partial)), 60, what="the partial weights file")
        pull.send_signal(signal.SIGKILL)  # as a closed terminal or the OOM killer would
        pull.wait(10)
    finally:
        stand_in.release.set()
        pull.kill()
    assert list(hub_env.rglob(weights_partial))  # left behind by the killed process
    again = cli("--workspace", str(workspace.root), "models", "pull", REPO, "--json")
    assert again.returncode == 0, again.stderr
    downloads = [json.loads(line) for line in again.stdout.splitlines() if '"download"' in line]
    # The files finished before the kill are kept; the weights restart (their partial cannot be reused).
    remaining = ("model.safetensors", "tokenizer.json", "tokenizer_config.json")
    assert downloads[-1]["bytes_total"] == sum((repo_dir / name).stat().st_size for name in remaining)
    snapshot = Path(json.loads(again.stdout.splitlines()[-1])["path"])
    assert digest(snapshot / "model.safetensors") == digest(repo_dir / "model.safetensors")
    assert not list(hub_env.rglob("*.incomplete"))
