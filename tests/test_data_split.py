"""Validation, de-duplication, leak-free deterministic splits, stratification, manifest, demo data."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from workbench.core.data import MANIFEST, SPLITS, list_datasets, parse_ratios, prepare, prompt_key, split_dataset
from workbench.core.data.demo import DEMO_FILE, ensure_demo_dataset
from workbench.core.data.messages import message_from_dict
from workbench.core.errors import UserError


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def qa_rows(n, topic=None):
    return [{"question": f"질문 {i}번: 원천세 납부일은?", "answer": f"답 {i}", **({"topic": topic(i)} if topic else {})}
            for i in range(n)]


def read_split(directory, name):
    return [json.loads(line) for line in (directory / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_invalid_json_line_names_file_and_line(tmp_path):
    lines = [json.dumps({"question": f"q{i}", "answer": "a"}) for i in range(20)]
    lines[16] = '{"question": "q16", "answer": }'
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"^data\.jsonl line 17: invalid JSON \(Expecting value at column 31\)"):
        prepare(path)
    prepared = prepare(path, skip_bad=True)
    assert len(prepared.rows) == 19
    assert prepared.report()["bad_rows"] == 1
    assert prepared.report()["bad_row_examples"] == ["line 17: invalid JSON (Expecting value at column 31)"]


def test_row_with_wrong_structure_names_the_field(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "no answer"}]},
    ])
    with pytest.raises(UserError, match=r"chat\.jsonl line 2: field 'messages': the last message must be the assistant"):
        prepare(path)


def test_empty_prompt_or_answer_reported_and_duplicates_counted(tmp_path):
    rows = qa_rows(12) + [{"question": "", "answer": "x"}, {"question": "q?", "answer": " "}, qa_rows(1)[0]]
    prepared = prepare(write_jsonl(tmp_path / "d.jsonl", rows))
    report = prepared.report()
    assert (report["empty_prompt"], report["empty_prompt_examples"]) == (1, ["line 13"])
    assert (report["empty_response"], report["empty_response_examples"]) == (1, ["line 14"])
    assert report["duplicates_dropped"] == 1
    assert report["usable_rows"] == 12


def test_too_few_rows_for_the_ratios(tmp_path):
    prepared = prepare(write_jsonl(tmp_path / "small.jsonl", qa_rows(9)))
    with pytest.raises(UserError, match=r"small\.jsonl: 9 distinct prompts, but ratios 0\.8:0\.1:0\.1 need at least 10"):
        split_dataset(prepared, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    split_dataset(prepared, tmp_path / "out2", parse_ratios("2:1:0"))  # 9 rows are plenty for 2:1
    assert [len(read_split(tmp_path / "out2", s)) for s in SPLITS] == [6, 3, 0]


def test_same_seed_same_files_different_seed_different(tmp_path):
    prepared = prepare(write_jsonl(tmp_path / "d.jsonl", qa_rows(200)))
    split_dataset(prepared, tmp_path / "a", seed=7)
    split_dataset(prepared, tmp_path / "b", seed=7)
    split_dataset(prepared, tmp_path / "c", seed=8)
    for name in SPLITS:
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    assert (tmp_path / "a" / "test.jsonl").read_bytes() != (tmp_path / "c" / "test.jsonl").read_bytes()
    assert [len(read_split(tmp_path / "a", s)) for s in SPLITS] == [160, 20, 20]


def test_rows_sharing_a_prompt_never_cross_splits(tmp_path):
    rows = []
    for i in range(60):  # every prompt three times: different answers, spacing and case
        rows += [{"question": f"What is tax {i}?", "answer": "a"}, {"question": f"what  is TAX {i}?", "answer": "b"},
                 {"question": f"What is tax {i}?", "answer": "c"}]
    out = tmp_path / "out"
    split_dataset(prepare(write_jsonl(tmp_path / "d.jsonl", rows)), out, seed=3)
    where = {}
    for name in SPLITS:
        for row in read_split(out, name):
            key = prompt_key(tuple(message_from_dict(m) for m in row["messages"]))
            where.setdefault(key, set()).add(name)
    assert len(where) == 60
    assert all(len(splits) == 1 for splits in where.values())


def test_stratified_split_keeps_proportions(tmp_path):
    rows = qa_rows(300, topic=lambda i: "legal" if i % 3 == 0 else "tax")
    prepared = prepare(write_jsonl(tmp_path / "d.jsonl", rows), stratify="topic")
    split_dataset(prepared, tmp_path / "out", seed=1)
    source_topic = {r["question"]: r["topic"] for r in rows}
    for name, expected in (("train", 80), ("val", 10), ("test", 10)):
        topics = Counter(source_topic[r["messages"][0]["content"]] for r in read_split(tmp_path / "out", name))
        assert topics["legal"] == pytest.approx(expected, abs=1)
        assert topics["tax"] == pytest.approx(2 * expected, abs=1)
    with pytest.raises(UserError, match=r"--stratify nope: d\.jsonl has no such column"):
        prepare(tmp_path / "d.jsonl", stratify="nope")


def test_manifest_contents_and_source_untouched(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", qa_rows(30) + qa_rows(2))
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "ds"
    split_dataset(prepare(source, system_prompt="세무 도우미"), out, parse_ratios("8:1:1"), seed=5)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before == manifest["source_sha256"]
    assert manifest["source"] == str(source.resolve())
    assert (manifest["format"], manifest["encoding"], manifest["schema"]) == ("jsonl", "utf-8", "qa")
    assert manifest["mapping"] == {"prompt": "question", "response": "answer"}
    assert manifest["counts"] == {"train": 24, "val": 3, "test": 3}
    assert manifest["seed"] == 5 and manifest["ratios"] == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert manifest["validation"]["duplicates_dropped"] == 2
    assert manifest["system_prompt"] == "세무 도우미" and manifest["created"]
    assert read_split(out, "train")[0]["messages"][0] == {"role": "system", "content": "세무 도우미"}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.jsonl", "train.jsonl", "val.jsonl"]
    with pytest.raises(UserError, match="already exists"):
        split_dataset(prepare(source), out)


def test_augment_templates_only_for_dialogues_and_only_train(tmp_path):
    rows = [{"dialogue": f"#Person1#: 회의는 {i}시인가요? #Person2#: 네.", "summary": f"회의는 {i}시다."} for i in range(20)]
    out = tmp_path / "out"
    split_dataset(prepare(write_jsonl(tmp_path / "dlg.jsonl", rows)), out, augment_templates=3)
    train = read_split(out, "train")
    assert len(train) == 16 * 3 and len(read_split(out, "val")) == 2
    phrasings = {r["messages"][0]["content"].split("\n\n")[0] for r in train}
    assert phrasings == {"다음 대화를 요약해주세요.", "아래 대화의 핵심 내용을 정리해주세요.", "주어진 대화를 간단히 요약하세요."}
    with pytest.raises(UserError, match="--augment-templates applies to dialogue/summary data"):
        split_dataset(prepare(write_jsonl(tmp_path / "qa.jsonl", qa_rows(20))), tmp_path / "x", augment_templates=2)


def test_demo_dataset_is_split_once(workspace):
    out = ensure_demo_dataset(workspace)
    assert out == workspace.datasets / "demo"
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    rows = sum(1 for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip())
    assert rows >= 200 and sum(manifest["counts"].values()) == rows and manifest["seed"] == 42
    stamp = (out / MANIFEST).stat().st_mtime_ns
    assert ensure_demo_dataset(workspace) == out and (out / MANIFEST).stat().st_mtime_ns == stamp
    assert [d["name"] for d in list_datasets(workspace)] == ["demo"]
    text = DEMO_FILE.read_text(encoding="utf-8")
    assert "원" in text and "Paid" in text and '\\"category\\"' in text  # Korean and English notes, JSON answers
