"""The bad-input matrix (issue 8): every user-facing CLI entry point answers a mistake with exactly one
`error:` line naming the offending file/line/field/flag, exit code 2, no traceback, and nothing written.

Each case runs `workbench.cli.main` in-process against one shared workspace (a prepared split, finished and
failed runs, data and preset files to break); the whole tree is snapshotted (bytes, sizes, mtimes, directory
mtimes) before and after every case. A few cases run as real subprocesses to prove no traceback escapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, write_split
from workbench.cli import main


def _qa_rows(n: int) -> list[str]:
    return [json.dumps({"question": f"Q{i}: 종합소득세 신고 기한은?", "answer": "5월 31일까지입니다.", "topic": "tax"},
                       ensure_ascii=False) for i in range(n)]


def _run_yaml(model_dir: Path, data_dir: Path) -> dict:
    from workbench.core.config import config_to_dict, validate_config

    return config_to_dict(validate_config({"preset": "llama-lora", "model": {"name_or_path": str(model_dir)},
                                           "data": {"path": str(data_dir)}}, "fixture"))


def _make_run(runs: Path, run_id: str, config: dict, status: dict, adapter_files: tuple[str, ...] = ()) -> None:
    run = runs / run_id
    run.mkdir(parents=True)
    (run / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (run / "status.json").write_text(json.dumps(status), encoding="utf-8")
    (run / "events.jsonl").write_text("", encoding="utf-8")
    if adapter_files:
        (run / "adapter").mkdir()
        for name in adapter_files:
            content = json.dumps({"base_model_name_or_path": config["model"]["name_or_path"], "r": 8}) \
                if name.endswith(".json") else "not real weights"
            (run / "adapter" / name).write_text(content, encoding="utf-8")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, Path]:
    """Everything the cases point at, built once: the cases must leave it exactly as it is."""
    root = tmp_path_factory.mktemp("bad-inputs")
    ws = root / "ws"
    good_split = write_split(ws / "datasets" / "good", rows=30)
    model = root / "model_fake"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    (root / "model_noconfig").mkdir()
    (root / "model_noconfig" / "README.md").write_text("no config here\n", encoding="utf-8")

    config = _run_yaml(model, good_split)
    runs = ws / "runs"
    _make_run(runs, "done", config, {"state": "completed", "pid": None, "created": 1.0},
              ("adapter_config.json", "adapter_model.safetensors"))
    _make_run(runs, "noadapter", config, {"state": "failed", "pid": None, "created": 2.0})
    _make_run(runs, "pickled", config, {"state": "completed", "pid": None, "created": 3.0},
              ("adapter_config.json", "adapter_model.bin"))
    # A failed run whose only checkpoint was cut short (no COMPLETE marker): never resumed from or loaded.
    _make_run(runs, "cut", config, {"state": "failed", "pid": None, "created": 5.0})
    (runs / "cut" / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (runs / "cut" / "checkpoints" / "checkpoint-5" / "adapter_config.json").write_text("{}", encoding="utf-8")
    # A run whose files were damaged by hand: listed and refused by name, never a crash.
    damaged = runs / "damaged"
    damaged.mkdir()
    (damaged / "run.yaml").write_text("model:\n  name_or_path: [unclosed\n", encoding="utf-8")
    (damaged / "status.json").write_text('["not", "an", "object"]\n', encoding="utf-8")
    (damaged / "events.jsonl").write_text('garbage\n{"type": "step"}\n[1]\n', encoding="utf-8")
    # A live pid (this test process) makes the run read as running.
    _make_run(runs, "active", config, {"state": "running", "pid": os.getpid(), "created": 4.0})

    data = root / "data"
    data.mkdir()
    (data / "good.jsonl").write_text("\n".join(_qa_rows(20)) + "\n", encoding="utf-8")
    broken = _qa_rows(6)
    broken[2] = '{"question": "unterminated'
    (data / "bad_line.jsonl").write_text("\n".join(broken) + "\n", encoding="utf-8")
    (data / "latin1.jsonl").write_bytes(
        (_qa_rows(2)[0] + "\n").encode() + '{"question": "caf\u00e9 cr\u00e8me", "answer": "ok"}\n'.encode("latin-1"))
    (data / "empty.jsonl").write_text("", encoding="utf-8")
    (data / "nocols.jsonl").write_text("\n".join(json.dumps({"foo": i, "bar": "x"}) for i in range(5)) + "\n",
                                       encoding="utf-8")
    (data / "two_rows.jsonl").write_text("\n".join(_qa_rows(2)) + "\n", encoding="utf-8")
    (data / "rows.xml").write_text("<rows/>\n", encoding="utf-8")
    (data / "bad_header.csv").write_text("question,,answer\na,b,c\n", encoding="utf-8")

    presets = root / "presets"
    presets.mkdir()
    preset_files = {
        "bad_yaml.yaml": "lora:\n  r: 8\n   lora_alpha: [16\n",
        "out_of_range.yaml": "lora:\n  r: 0\n",
        "unknown_field.yaml": "lora:\n  rank: 8\n",
        "wrong_type.yaml": "training:\n  learning_rate: fast\n",
        "qlora_no4bit.yaml": "method: qlora\nquantization:\n  load_in_4bit: false\n",
        "top_list.yaml": "- lora\n- r\n",
        "bad_family.yaml": "family: klingon\n",
        "bad_encoding.yaml": None,
    }
    for name, text in preset_files.items():
        if text is None:
            (presets / name).write_bytes(b"description: \xff\xfe caf\xe9\n")
        else:
            (presets / name).write_text(text, encoding="utf-8")
    (presets / "good.yaml").write_text(f"model:\n  name_or_path: {model}\n", encoding="utf-8")
    # A saved run.yaml the trainer cannot run (an encoder-decoder task on a causal model): refused before a
    # run dir is made.
    (root / "seq2seq_run.yaml").write_text(yaml.safe_dump({**config, "task": "seq2seq"}), encoding="utf-8")

    export_full = root / "export_full"
    export_full.mkdir()
    (export_full / "keep.txt").write_text("user file\n", encoding="utf-8")
    (root / "plain_file").write_text("not a directory\n", encoding="utf-8")
    return {"root": root, "ws": ws, "data": data, "presets": presets, "model": model, "split": good_split}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file's (size, mtime_ns, sha256) and every directory's mtime_ns under `root`."""
    state: dict[str, tuple] = {}
    for directory, dirnames, filenames in os.walk(root):
        path = Path(directory)
        state[str(path.relative_to(root)) + "/"] = ("dir", path.stat().st_mtime_ns, tuple(sorted(dirnames + filenames)))
        for name in filenames:
            file = path / name
            info = file.stat()
            state[str(file.relative_to(root))] = (info.st_size, info.st_mtime_ns,
                                                  hashlib.sha256(file.read_bytes()).hexdigest())
    return state


# (id, argv, distinctive substring of the one error line). "{root}" etc. are filled in from the tree
# fixture; every argv gets "--workspace {ws}" in front unless it names its own workspace.
CASES = [
    # -- argparse usage errors (one line thanks to workbench.cli.OneLineParser) ---------------------
    ("cli-unknown-command", ["fly"], "invalid choice: 'fly'"),
    ("cli-unknown-flag", ["runs", "list", "--colour"], "unrecognized arguments: --colour"),
    ("cli-runs-no-action", ["runs"], "required: ACTION"),
    ("train-max-steps-not-int", ["train", "--preset", "llama-lora", "--max-steps", "ten"], "--max-steps"),
    ("train-preset-and-config", ["train", "--preset", "a", "--config", "b"], "not allowed with argument --preset"),
    ("generate-prompt-missing", ["generate", "--model", "{model}"], "--prompt"),
    ("generate-temperature-not-float", ["generate", "--prompt", "hi", "--temperature", "hot"], "--temperature"),
    ("generate-compare-choice", ["generate", "--prompt", "hi", "--compare", "gpt4"], "--compare"),
    ("data-split-out-missing", ["data", "split", "{data}/good.jsonl"], "--out"),
    ("data-seed-not-int", ["data", "split", "{data}/good.jsonl", "--out", "x", "--seed", "abc"], "--seed"),
    ("export-out-missing", ["export", "--run", "done"], "--out"),
    ("eval-limit-not-int", ["eval", "--run", "done", "--limit", "all"], "--limit"),
    ("doctor-extra-arg", ["doctor", "--gpu"], "unrecognized arguments: --gpu"),
    ("demo-extra-arg", ["demo", "now"], "unrecognized arguments: now"),
    ("presets-unknown-action", ["presets", "edit"], "invalid choice: 'edit'"),
    # -- workspace ----------------------------------------------------------------------------------
    ("workspace-is-a-file", ["--workspace", "{root}/plain_file", "runs", "list"], "is not a directory"),
    ("workspace-is-a-file-doctor", ["--workspace", "{root}/plain_file", "doctor"], "is not a directory"),
    # -- data files ---------------------------------------------------------------------------------
    ("data-malformed-jsonl-line", ["data", "inspect", "{data}/bad_line.jsonl"], "bad_line.jsonl line 3"),
    ("data-split-malformed-line", ["data", "split", "{data}/bad_line.jsonl", "--out", "x"], "bad_line.jsonl line 3"),
    ("data-wrong-encoding", ["data", "inspect", "{data}/latin1.jsonl"], "latin1.jsonl line 2: not UTF-8"),
    ("data-empty-file", ["data", "inspect", "{data}/empty.jsonl"], "empty.jsonl: no rows"),
    ("data-missing-columns", ["data", "inspect", "{data}/nocols.jsonl"], "nocols.jsonl: no known schema"),
    ("data-missing-file", ["data", "inspect", "{data}/nope.jsonl"], "nope.jsonl: no such file"),
    ("data-unsupported-type", ["data", "inspect", "{data}/rows.xml"], "unsupported file type '.xml'"),
    ("data-csv-unnamed-column", ["data", "inspect", "{data}/bad_header.csv"], "bad_header.csv line 1: column"),
    ("data-dir-not-dataset", ["data", "inspect", "{data}"], "data: a directory must be a datasets.save_to_disk"),
    ("data-too-few-rows", ["data", "split", "{data}/two_rows.jsonl", "--out", "x"], "two_rows.jsonl: 2 distinct"),
    ("data-ratios-not-numbers", ["data", "split", "{data}/good.jsonl", "--out", "x", "--ratios", "8:x"],
     "--ratios '8:x'"),
    ("data-ratios-four-parts", ["data", "split", "{data}/good.jsonl", "--out", "x", "--ratios", "1:1:1:1"],
     "--ratios '1:1:1:1'"),
    ("data-ratios-zero-train", ["data", "split", "{data}/good.jsonl", "--out", "x", "--ratios", "0:1:1"],
     "--ratios '0:1:1'"),
    ("data-ratios-negative", ["data", "split", "{data}/good.jsonl", "--out", "x", "--ratios", "8:-1:1"],
     "--ratios '8:-1:1'"),
    ("data-ratios-nan", ["data", "split", "{data}/good.jsonl", "--out", "x", "--ratios", "nan:1:1"],
     "--ratios 'nan:1:1'"),
    ("data-ratios-infinite", ["data", "split", "{data}/good.jsonl", "--out", "x", "--ratios", "1e309:1:1"],
     "--ratios '1e309:1:1'"),
    ("data-stratify-unknown-column", ["data", "split", "{data}/good.jsonl", "--out", "x", "--stratify", "lang"],
     "--stratify lang"),
    ("data-mapping-unknown-column", ["data", "inspect", "{data}/good.jsonl", "--mapping", "prompt=질문"],
     "mapping prompt='질문'"),
    ("data-mapping-unknown-field", ["data", "inspect", "{data}/good.jsonl", "--mapping", "colour=question"],
     "mapping field 'colour'"),
    ("data-mapping-malformed", ["data", "inspect", "{data}/good.jsonl", "--mapping", "question"],
     "expected FIELD=COLUMN"),
    ("data-mapping-unknown-schema", ["data", "inspect", "{data}/good.jsonl", "--mapping", "schema=poem"],
     "schema='poem'"),
    ("data-out-exists", ["data", "split", "{data}/good.jsonl", "--out", "good"], "already exists"),
    ("data-out-holds-source", ["data", "split", "{data}/good.jsonl", "--out", "{data}", "--overwrite"],
     "would overwrite the source"),
    ("data-out-under-a-file", ["data", "split", "{data}/good.jsonl", "--out", "{root}/plain_file/sub"],
     "plain_file is a file, not a directory"),
    ("data-out-bad-name", ["data", "split", "{data}/good.jsonl", "--out", "my data!"], "invalid dataset name"),
    ("data-augment-not-dialogue", ["data", "split", "{data}/good.jsonl", "--out", "x", "--augment-templates", "3"],
     "--augment-templates"),
    ("data-model-missing-dir", ["data", "inspect", "{data}/good.jsonl", "--model", "{root}/nowhere"],
     "model '{root}/nowhere' not found"),
    # -- presets --------------------------------------------------------------------------------------
    ("preset-unknown", ["presets", "show", "llama-large"], "no preset 'llama-large'"),
    ("preset-escape-name", ["presets", "show", "../secrets"], "invalid preset name '../secrets'"),
    ("preset-invalid-yaml", ["presets", "show", "{presets}/bad_yaml.yaml"], "bad_yaml.yaml: line 3: invalid YAML"),
    ("preset-out-of-range", ["presets", "show", "{presets}/out_of_range.yaml"], "out_of_range.yaml: lora.r:"),
    ("preset-unknown-field", ["presets", "show", "{presets}/unknown_field.yaml"], "lora.rank: unknown field"),
    ("preset-wrong-type", ["presets", "show", "{presets}/wrong_type.yaml"], "training.learning_rate:"),
    ("preset-qlora-without-4bit", ["presets", "show", "{presets}/qlora_no4bit.yaml"],
     "needs quantization.load_in_4bit"),
    ("preset-top-level-list", ["presets", "show", "{presets}/top_list.yaml"], "expected a mapping at the top level"),
    ("preset-unknown-family", ["presets", "show", "{presets}/bad_family.yaml"], "family: unknown family 'klingon'"),
    ("preset-not-utf8", ["presets", "show", "{presets}/bad_encoding.yaml"], "bad_encoding.yaml: cannot read"),
    ("presets-check-unknown", ["presets", "check", "nope"], "no preset 'nope'"),
    # -- train: presets, --set, data, model paths, run ids ---------------------------------------------
    ("train-unknown-preset", ["train", "--preset", "nope", "--data", "good"], "no preset 'nope'"),
    ("train-preset-invalid-yaml", ["train", "--preset", "{presets}/bad_yaml.yaml", "--data", "good"],
     "invalid YAML"),
    ("train-preset-qlora-without-4bit", ["train", "--preset", "{presets}/qlora_no4bit.yaml", "--data", "good"],
     "needs quantization.load_in_4bit"),
    ("train-seq2seq-preset-on-a-causal-model", ["train", "--preset", "bart-lora", "--data", "good"],
     "preset bart-lora: task seq2seq, but 'smollm2-135m' is a decoder-only llama model; choose a llama preset"),
    ("train-data-required", ["train", "--preset", "llama-lora"], "--data is required"),
    ("train-data-missing", ["train", "--preset", "llama-lora", "--data", "{root}/nodata"], "--data '{root}/nodata'"),
    ("train-data-not-prepared", ["train", "--preset", "llama-lora", "--data", "{data}"], "train.jsonl is missing"),
    ("train-set-unknown-key", ["train", "--preset", "{presets}/good.yaml", "--data", "good", "--set", "lora.rank=8"],
     "--set: lora.rank: unknown field"),
    ("train-set-bad-value", ["train", "--preset", "{presets}/good.yaml", "--data", "good", "--set", "lora.r=many"],
     "--set: lora.r:"),
    ("train-set-out-of-range", ["train", "--preset", "{presets}/good.yaml", "--data", "good",
                                "--set", "training.learning_rate=-1"], "training.learning_rate"),
    ("train-set-malformed", ["train", "--preset", "{presets}/good.yaml", "--data", "good", "--set", "lora.r"],
     "--set 'lora.r': expected key=value"),
    ("train-set-empty-key-part", ["train", "--preset", "{presets}/good.yaml", "--data", "good", "--set", "lora..r=8"],
     "empty part in dotted key"),
    ("train-set-not-a-section", ["train", "--preset", "llama-lora", "--data", "good", "--set", "lora.r.x=1"],
     "'r' is not a section"),
    ("train-set-bad-literal", ["train", "--preset", "{presets}/good.yaml", "--data", "good", "--set", "method=magic"],
     "--set: method: Input should be"),
    ("train-set-data-file-escape", ["train", "--preset", "{presets}/good.yaml", "--data", "good",
                                    "--set", "data.train_file=../../etc/passwd"], "must be a file name inside"),
    ("train-max-steps-zero", ["train", "--preset", "{presets}/good.yaml", "--data", "good", "--max-steps", "0"],
     "--max-steps 0"),
    ("train-model-missing-dir", ["train", "--preset", "llama-lora", "--data", "good", "--model", "{root}/nowhere"],
     "not found"),
    ("train-model-without-config", ["train", "--preset", "llama-lora", "--data", "good",
                                    "--model", "{root}/model_noconfig"], "has no config.json"),
    ("train-model-missing-gguf", ["train", "--preset", "llama-lora", "--data", "good", "--model", "{root}/m.gguf"],
     "no such .gguf file"),
    ("train-model-nonsense-name", ["train", "--preset", "llama-lora", "--data", "good", "--model", "a b/c d!"],
     "model 'a b/c d!' not found"),
    ("train-model-is-a-file", ["train", "--preset", "llama-lora", "--data", "good", "--model", "{root}/plain_file"],
     "not a directory or a .gguf file"),
    ("train-run-id-escape", ["train", "--preset", "{presets}/good.yaml", "--data", "good", "--run-id", "../escape"],
     "invalid run id '../escape'"),
    ("train-run-id-absolute", ["train", "--preset", "{presets}/good.yaml", "--data", "good", "--run-id", "/tmp/x"],
     "invalid run id '/tmp/x'"),
    ("train-run-id-trailing-newline", ["train", "--preset", "{presets}/good.yaml", "--data", "good",
                                       "--run-id", "new\n"], "invalid run id 'new\\n'"),
    ("train-run-id-exists", ["train", "--preset", "{presets}/good.yaml", "--data", "good", "--run-id", "done"],
     "run id 'done' already exists"),
    ("train-config-missing", ["train", "--config", "{root}/nope.yaml"], "nope.yaml: no such file"),
    ("train-config-invalid", ["train", "--config", "{presets}/unknown_field.yaml"], "lora.rank: unknown field"),
    ("train-config-seq2seq-on-a-causal-model", ["train", "--config", "{root}/seq2seq_run.yaml"],
     "is a decoder-only llama model"),
    # -- runs -----------------------------------------------------------------------------------------
    ("runs-show-unknown", ["runs", "show", "ghost"], "no run 'ghost'"),
    ("runs-show-escape", ["runs", "show", "../ws"], "invalid run id '../ws'"),
    ("runs-show-absolute", ["runs", "show", "/etc"], "invalid run id '/etc'"),
    ("runs-show-empty", ["runs", "show", ""], "invalid run id ''"),
    ("runs-stop-finished", ["runs", "stop", "done"], "run done is completed, not running"),
    ("runs-pause-failed", ["runs", "pause", "noadapter"], "run noadapter is failed, not running"),
    ("runs-resume-completed", ["runs", "resume", "done"], "run done already completed"),
    ("runs-resume-no-checkpoint", ["runs", "resume", "noadapter"], "has no complete checkpoint"),
    ("runs-resume-only-cut-checkpoint", ["runs", "resume", "cut"], "run cut has no complete checkpoint"),
    ("runs-resume-running", ["runs", "resume", "active"], "run active is running"),
    ("runs-stop-damaged", ["runs", "stop", "damaged"], "run damaged is unknown, not running"),
    ("runs-resume-damaged", ["runs", "resume", "damaged"], "run damaged has no complete checkpoint"),
    ("eval-damaged-run-yaml", ["eval", "--run", "damaged"], "damaged/run.yaml: line 3: invalid YAML"),
    ("generate-damaged-run-yaml", ["generate", "--run", "damaged", "--prompt", "hi"], "damaged/run.yaml: line 3"),
    ("train-config-damaged", ["train", "--config", "{ws}/runs/damaged/run.yaml"], "run.yaml: line 3: invalid YAML"),
    ("runs-delete-running", ["runs", "delete", "active", "--yes"], "stop it before deleting"),
    ("runs-delete-unconfirmed", ["runs", "delete", "done"], "pass --yes"),
    ("runs-delete-unknown", ["runs", "delete", "ghost", "--yes"], "no run 'ghost'"),
    # -- generate (playground parameters, adapters, runs) --------------------------------------------
    ("generate-temperature-negative", ["generate", "--run", "done", "--prompt", "hi", "--temperature", "-0.5"],
     "temperature"),
    ("generate-top-p-above-1", ["generate", "--run", "done", "--prompt", "hi", "--top-p", "1.5"], "top_p"),
    ("generate-top-k-negative", ["generate", "--run", "done", "--prompt", "hi", "--top-k", "-1"], "top_k"),
    ("generate-max-new-tokens-zero", ["generate", "--run", "done", "--prompt", "hi", "--max-new-tokens", "0"],
     "max_new_tokens"),
    ("generate-repetition-penalty-zero", ["generate", "--run", "done", "--prompt", "hi",
                                          "--repetition-penalty", "0"], "repetition_penalty"),
    ("generate-beams-with-sampling", ["generate", "--run", "done", "--prompt", "hi", "--num-beams", "2", "--sample"],
     "num_beams > 1 is beam search"),
    ("generate-max-new-tokens-too-many", ["generate", "--run", "done", "--prompt", "hi", "--max-new-tokens",
                                          "100000"], "max_new_tokens: Input should be less than or equal to 8192"),
    ("generate-seed-negative", ["generate", "--run", "done", "--prompt", "hi", "--seed", "-1"], "seed"),
    ("generate-num-beams-zero", ["generate", "--run", "done", "--prompt", "hi", "--num-beams", "0"], "num_beams"),
    ("generate-empty-prompt", ["generate", "--run", "done", "--prompt", "  "], "--prompt is empty"),
    ("generate-adapter-missing-dir", ["generate", "--adapter", "{root}/no_adapter", "--prompt", "hi"],
     "has no adapter_config.json"),
    ("generate-run-unknown", ["generate", "--run", "ghost", "--prompt", "hi"], "no run 'ghost'"),
    ("generate-run-without-adapter", ["generate", "--run", "noadapter", "--prompt", "hi"], "has no final adapter"),
    ("generate-checkpoint-missing", ["generate", "--run", "done", "--checkpoint", "7", "--prompt", "hi"],
     "run done checkpoint 7"),
    ("generate-checkpoint-incomplete", ["generate", "--run", "cut", "--checkpoint", "5", "--prompt", "hi"],
     "checkpoint 5 is incomplete"),
    ("generate-checkpoint-without-run", ["generate", "--model", "{model}", "--checkpoint", "7", "--prompt", "hi"],
     "--checkpoint needs --run"),
    ("generate-compare-run-unknown", ["generate", "--run", "done", "--compare-run", "ghost", "--prompt", "hi"],
     "no run 'ghost'"),
    ("generate-compare-run-bad-step", ["generate", "--run", "done", "--compare-run", "done@last", "--prompt", "hi"],
     "expected ID or ID@STEP"),
    ("generate-compare-run-same", ["generate", "--run", "done", "--compare-run", "done", "--prompt", "hi"],
     "same adapter"),
    ("generate-compare-base-alone", ["generate", "--model", "{model}", "--compare", "base", "--prompt", "hi"],
     "--compare base needs --adapter or --run"),
    ("generate-no-model", ["generate", "--prompt", "hi"], "--model is required"),
    ("generate-model-missing-dir", ["generate", "--model", "{root}/nowhere", "--prompt", "hi"], "not found"),
    ("generate-model-without-config", ["generate", "--model", "{root}/model_noconfig", "--prompt", "hi"],
     "has no config.json"),
    # -- eval / export --------------------------------------------------------------------------------
    ("eval-unknown-run", ["eval", "--run", "ghost"], "no run 'ghost'"),
    ("eval-run-escape", ["eval", "--run", "../../etc"], "invalid run id '../../etc'"),
    ("eval-run-without-adapter", ["eval", "--run", "noadapter"], "run noadapter has no adapter yet"),
    ("eval-split-unknown", ["eval", "--run", "done", "--split", "dev"], "--split 'dev'"),
    ("eval-limit-zero", ["eval", "--run", "done", "--limit", "0"], "--limit 0"),
    ("eval-max-new-tokens-zero", ["eval", "--run", "done", "--max-new-tokens", "0"], "--max-new-tokens 0"),
    ("export-unknown-run", ["export", "--run", "ghost", "--out", "{root}/out"], "no run 'ghost'"),
    ("export-run-without-adapter", ["export", "--run", "noadapter", "--out", "{root}/out"], "has no adapter yet"),
    ("export-pickle-adapter", ["export", "--run", "pickled", "--out", "{root}/out"], "no adapter_model.safetensors"),
    ("export-out-not-empty", ["export", "--run", "done", "--out", "{root}/export_full"],
     "export_full: already exists and is not empty"),
    ("export-out-under-a-file", ["export", "--run", "done", "--out", "{root}/plain_file/model"],
     "plain_file is a file, not a directory"),
    ("export-out-is-a-file", ["export", "--run", "done", "--out", "{root}/plain_file"], "plain_file: already exists"),
]


def _fill(text: str, tree: dict[str, Path]) -> str:
    return text.format(**{key: str(value) for key, value in tree.items()})


def _argv(args: list[str], tree: dict[str, Path]) -> list[str]:
    argv = [_fill(arg, tree) for arg in args]
    return argv if argv[0] == "--workspace" else ["--workspace", str(tree["ws"]), *argv]


def test_matrix_is_large_enough():
    assert len(CASES) >= 45
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("args", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input(args, expected, tree, capsys, monkeypatch):
    monkeypatch.chdir(tree["root"])  # a stray relative write would land in the snapshotted tree
    monkeypatch.setenv("LORA_WORKBENCH_HOME", str(tree["ws"]))
    before = snapshot(tree["root"])
    code = main(_argv(args, tree))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("error: "), err
    assert _fill(expected, tree) in lines[0]
    assert snapshot(tree["root"]) == before


def test_damaged_run_is_listed_not_a_crash(tree, capsys, monkeypatch):
    monkeypatch.chdir(tree["root"])
    before = snapshot(tree["root"])
    assert main(["--workspace", str(tree["ws"]), "runs", "list", "--json"]) == 0
    summaries = {summary["run_id"]: summary for summary in json.loads(capsys.readouterr().out)}
    assert summaries["damaged"]["state"] == "unknown" and summaries["damaged"]["model"] is None
    assert summaries["done"]["state"] == "completed"
    assert main(["--workspace", str(tree["ws"]), "runs", "show", "damaged"]) == 0
    assert "damaged" in capsys.readouterr().out
    assert snapshot(tree["root"]) == before


SUBPROCESS_CASES = [
    ("argparse", ["train", "--preset", "llama-lora", "--max-steps", "ten"], "--max-steps"),
    ("invalid-yaml", ["presets", "show", "{presets}/bad_yaml.yaml"], "invalid YAML"),
    ("run-escape", ["runs", "show", "../ws"], "invalid run id"),
    ("export-no-adapter", ["export", "--run", "noadapter", "--out", "{root}/out"], "has no adapter yet"),
    ("delete-without-terminal", ["runs", "delete", "done"], "pass --yes"),
]


@pytest.mark.parametrize(("args", "expected"), [case[1:] for case in SUBPROCESS_CASES],
                         ids=[case[0] for case in SUBPROCESS_CASES])
def test_bad_input_subprocess(args, expected, tree):
    """The installed entry point's real streams: one line on stderr, nothing on stdout, no traceback."""
    before = snapshot(tree["root"])
    env = {**os.environ, "LORA_WORKBENCH_HOME": str(tree["ws"]), "PYTHONPATH": str(REPO)}
    env.pop("LORA_WORKBENCH_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "workbench", *_argv(args, tree)], cwd=tree["root"], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert _fill(expected, tree) in result.stderr
    assert snapshot(tree["root"]) == before


def test_max_length_zero_after_tokenizer(tree, tiny_llama, capsys, monkeypatch):
    """A mistake found only once the model's tokenizer is loaded still ends as one line, nothing written."""
    monkeypatch.chdir(tree["root"])
    before = snapshot(tree["root"])
    code = main(["--workspace", str(tree["ws"]), "data", "inspect", str(tree["data"] / "good.jsonl"),
                 "--model", str(tiny_llama), "--max-length", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --max-length 0: must be a positive number")
    assert snapshot(tree["root"]) == before


@pytest.mark.parametrize("override, message", [
    ("data.path=/nonexistent/dataset", "data.path '/nonexistent/dataset': no such dataset directory"),
    ("data.train_file=missing.jsonl", "data.train_file 'missing.jsonl': not found in"),
    ("model.name_or_path=/nonexistent/model", "model '/nonexistent/model' not found"),
])
def test_path_overrides_are_checked_before_the_trainer_starts(tmp_path, override, message):
    from workbench.core.data.demo import ensure_demo_dataset
    from workbench.core.errors import UserError
    from workbench.core.newrun import resolve_config
    from workbench.core.workspace import Workspace

    workspace = Workspace.resolve(tmp_path / "ws")
    ensure_demo_dataset(workspace)
    with pytest.raises(UserError, match=re.escape(message)):
        resolve_config(workspace, "smollm2-demo", "demo", overrides=[override])
    assert not workspace.runs.exists() or not any(workspace.runs.iterdir())
