"""`lora-workbench data inspect|split`: output, JSON, exit code 2 with one line, nothing written on error."""

from __future__ import annotations

import hashlib
import json

from workbench.cli import main


def write_qa(path, n=20, bad_line=None):
    lines = [json.dumps({"question": f"Q{i}: 종합소득세 신고는?", "answer": "5월입니다."}, ensure_ascii=False)
             for i in range(n)]
    if bad_line:
        lines[bad_line - 1] = "{not json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_split_bare_name_goes_to_workspace(workspace, tmp_path, capsys):
    source = write_qa(tmp_path / "qa.jsonl")
    assert main(["--workspace", str(workspace.root), "data", "split", str(source), "--out", "tax", "--seed", "1"]) == 0
    out = workspace.datasets / "tax"
    assert "train 16, val 2, test 2" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["seed"] == 1 and manifest["counts"]["train"] == 16


def test_bad_line_exits_2_names_line_and_writes_nothing(workspace, tmp_path, capsys):
    source = write_qa(tmp_path / "data.jsonl", bad_line=17)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    code = main(["--workspace", str(workspace.root), "data", "split", str(source), "--out", "x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: data.jsonl line 17: invalid JSON") and err.count("\n") == 1
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    assert not (workspace.datasets / "x").exists() and not list(tmp_path.glob(".*partial"))
    assert main(["--workspace", str(workspace.root), "data", "split", str(source), "--out", "x", "--skip-bad"]) == 0
    assert "dropped: 1 malformed" in capsys.readouterr().out


def test_inspect_json_with_model(workspace, tmp_path, tiny_llama, capsys):
    source = write_qa(tmp_path / "qa.jsonl")
    assert main(["data", "inspect", str(source), "--model", str(tiny_llama), "--max-length", "16", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "qa" and report["usable_rows"] == 20
    stats = report["token_stats"]
    assert stats["max_length"] == 16 and stats["truncated_share"] == 1.0 and stats["warning"]
    assert stats["total"]["min"] > 16


def test_inspect_text_and_user_errors(tmp_path, capsys):
    source = write_qa(tmp_path / "qa.jsonl")
    assert main(["data", "inspect", str(source)]) == 0
    out = capsys.readouterr().out
    assert "schema       qa" in out and "20 usable" in out
    assert main(["data", "inspect", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    assert main(["data", "split", str(source), "--out", str(tmp_path / "o"), "--ratios", "8:x"]) == 2
    assert "--ratios '8:x'" in capsys.readouterr().err
