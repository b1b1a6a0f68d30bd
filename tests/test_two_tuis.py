"""Two TUIs on one workspace (issue 8): two processes hammering the same run's control.json and
status.json, one user preset and the feedback file never leave a torn or invalid file behind.

Each writer process goes through workbench.core (RunDir.request/write_status, save_user_preset,
append_feedback) and strictly re-reads every file after each write; this process reads them too while
both write. Bounded loop counts; the writers start together on a ready-file handshake (polled with a
deadline), and the test asserts their write windows really overlapped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import yaml

from conftest import REPO

ITERATIONS = 150

WRITER = r"""
import json, os, sys, time
from pathlib import Path

import yaml

from workbench.core.config import load_yaml_mapping, validate_config
from workbench.core.feedback import append_feedback, feedback_row
from workbench.core.presets import save_user_preset
from workbench.core.runs import CONTROL_ACTIONS, RunDir
from workbench.core.workspace import Workspace

root, run_path, tag, iterations, peers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
workspace = Workspace.resolve(root)
run = RunDir(Path(run_path))
Path(root, f"ready-{tag}").touch()
deadline = time.monotonic() + 60
while not all(Path(root, f"ready-{peer}").exists() for peer in peers):
    if time.monotonic() > deadline:
        sys.exit("peer never became ready")


def strict_json(path):
    data = json.loads(path.read_text(encoding="utf-8"))  # raises on a torn file
    assert isinstance(data, dict), data
    return data


started = time.time()
for i in range(iterations):
    run.request(CONTROL_ACTIONS[i % 3])
    assert strict_json(run.control_path)["action"] in CONTROL_ACTIONS
    run.write_status("running", step=i, writer=tag, note=tag * (i % 40))
    status = strict_json(run.status_path)
    assert status["state"] == "running" and isinstance(status["step"], int), status
    # Sizes vary so that a torn write would show as a truncated or mixed file.
    preset = save_user_preset(workspace, "shared", {"description": f"{tag} {i} " + "x" * (i % 97),
                                                     "lora": {"r": i % 64 + 1}})
    validate_config(load_yaml_mapping(preset.path), str(preset.path))
    append_feedback(workspace, feedback_row(f"{tag} question {i}", "answer " * (i % 13 + 1), "good"))
print(json.dumps({"started": started, "finished": time.time()}))
"""


def _strict_reads(run_dir, preset_path) -> int:
    """Parse every shared file that exists; any torn file raises. Returns how many were read."""
    read = 0
    for path in (run_dir / "control.json", run_dir / "status.json"):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        assert isinstance(json.loads(text), dict)
        read += 1
    try:
        text = preset_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return read
    data = yaml.safe_load(text)
    assert isinstance(data, dict) and data["lora"]["r"] >= 1
    return read + 1


def test_two_writers_never_tear_shared_files(tmp_path):
    from workbench.core.feedback import read_feedback
    from workbench.core.presets import load_preset
    from workbench.core.runs import RunDir
    from workbench.core.workspace import Workspace

    workspace = Workspace.resolve(tmp_path / "ws")
    run = RunDir(workspace.run_dir("shared-run"))
    run.path.mkdir(parents=True)
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tags = ("tui1", "tui2")
    writers = [
        subprocess.Popen([sys.executable, str(script), str(workspace.root), str(run.path), tag, str(ITERATIONS),
                          *(other for other in tags if other != tag)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for tag in tags
    ]
    preset_path = workspace.presets / "shared.yaml"
    reads = 0
    deadline = time.monotonic() + 240
    while any(writer.poll() is None for writer in writers) and time.monotonic() < deadline:
        reads += _strict_reads(run.path, preset_path)
    results = []
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        results.append(json.loads(out))
    reads += _strict_reads(run.path, preset_path)
    assert reads > 3

    # The two write windows overlapped: the writers really raced each other.
    first, second = results
    assert first["started"] < second["finished"] and second["started"] < first["finished"]

    # Final files are whole and came from one of the writers.
    assert json.loads(run.control_path.read_text(encoding="utf-8"))["action"] in ("stop", "pause", "resume")
    status = json.loads(run.status_path.read_text(encoding="utf-8"))
    assert status["writer"] in tags and status["step"] == ITERATIONS - 1
    preset = load_preset("shared", workspace)
    assert preset.data["description"].split()[0] in tags

    # Every feedback row of both writers arrived whole, one per line.
    lines = (workspace.feedback / "feedback.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 * ITERATIONS
    rows = read_feedback(workspace)
    assert len(rows) == 2 * ITERATIONS
    for tag in tags:
        questions = {row["question"] for row in rows if row["question"].startswith(tag)}
        assert questions == {f"{tag} question {i}" for i in range(ITERATIONS)}

    # No temporary files left behind by the atomic writes.
    leftovers = [p for p in workspace.root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
