"""Every format x schema loads and normalizes to the same conversations; encodings; mapping overrides."""

from __future__ import annotations

import csv
import json

import pytest

from workbench.core.data import parse_mapping, prepare, read_source
from workbench.core.errors import UserError
from data_helpers import pairs

PAIRS = [(f"질문 {i}: 부가가치세 신고 기한은?", f"답변 {i}: 25일 이내입니다.") for i in range(3)]

# schema -> (flat columns for CSV or None, record builder)
SCHEMAS = {
    "alpaca": lambda q, a: {"instruction": q, "input": "", "output": a},
    "qa_question": lambda q, a: {"question": q, "answer": a},
    "qa_prompt_response": lambda q, a: {"prompt": q, "response": a},
    "qa_prompt_completion": lambda q, a: {"prompt": q, "completion": a},
    "qa_q_a": lambda q, a: {"q": q, "a": a},
    "dialogue_summary": lambda q, a: {"fname": "train_0", "dialogue": q, "summary": a, "topic": "세금"},
    "text": lambda q, a: {"text": q},
    "messages": lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
    "sharegpt": lambda q, a: {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]},
}
NESTED = {"messages", "sharegpt"}
EXPECTED_SCHEMA = {"qa_question": "qa", "qa_prompt_response": "qa", "qa_prompt_completion": "qa", "qa_q_a": "qa"}


def expected_messages(schema: str, q: str, a: str):
    if schema == "text":
        return (("assistant", q),)
    if schema == "dialogue_summary":
        return (("user", f"다음 대화를 요약해주세요.\n\n{q}"), ("assistant", a))
    return (("user", q), ("assistant", a))


def write(path, fmt: str, records: list[dict]) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    elif fmt == "json-object":
        path.write_text(json.dumps({"version": 1, "data": records}, ensure_ascii=False), encoding="utf-8")
    elif fmt in ("csv", "tsv"):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]), delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(records)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    elif fmt == "disk":
        from datasets import Dataset

        Dataset.from_list(records).save_to_disk(str(path))


SUFFIX = {"jsonl": ".jsonl", "json": ".json", "json-object": ".json", "csv": ".csv", "tsv": ".tsv",
          "parquet": ".parquet", "disk": ""}


# Nested conversations (messages, ShareGPT) have no CSV/TSV form.
FORMAT_SCHEMA_PAIRS = [(fmt, schema) for fmt in SUFFIX for schema in SCHEMAS
                       if not (fmt in ("csv", "tsv") and schema in NESTED)]


@pytest.mark.parametrize("fmt,schema", FORMAT_SCHEMA_PAIRS)
def test_every_format_and_schema(tmp_path, fmt, schema):
    path = tmp_path / f"data{SUFFIX[fmt]}"
    write(path, fmt, [SCHEMAS[schema](q, a) for q, a in PAIRS])
    prepared = prepare(path)
    assert prepared.mapping.schema == EXPECTED_SCHEMA.get(schema, schema)
    assert [pairs(row.messages) for row in prepared.rows] == [expected_messages(schema, q, a) for q, a in PAIRS]


def test_cp949_csv_is_detected_and_decoded(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes("질문,답변\n연말정산은 언제 하나요?,매년 1월에서 2월 사이입니다.\n".encode("cp949"))
    source = read_source(path)
    assert source.encoding == "cp949"
    prepared = prepare(path)
    assert pairs(prepared.rows[0].messages) == (("user", "연말정산은 언제 하나요?"), ("assistant", "매년 1월에서 2월 사이입니다."))


def test_bom_jsonl(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"question": "세금?", "answer": "네."}, ensure_ascii=False).encode())
    prepared = prepare(path)
    assert prepared.source.encoding == "utf-8-sig"
    assert prepared.rows[0].messages[0][:2] == ("user", "세금?")


def test_undecodable_bytes_name_the_line_instead_of_mojibake(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_bytes(b"question,answer\nok,fine\n\xff\xfe\xfa\xff,\x80\x81\n")
    with pytest.raises(UserError, match=r"broken\.csv line 3: not UTF-8 or CP949"):
        read_source(path)


def test_korean_columns_detected_and_mapping_override(tmp_path):
    path = tmp_path / "custom.csv"
    path.write_text("번호,고객문의,상담답변\n1,환불되나요?,네 7일 이내 가능합니다.\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"custom\.csv: no known schema in columns 번호, 고객문의, 상담답변"):
        prepare(path)
    prepared = prepare(path, parse_mapping("prompt=고객문의,response=상담답변"))
    assert prepared.mapping.schema == "qa"
    assert pairs(prepared.rows[0].messages) == (("user", "환불되나요?"), ("assistant", "네 7일 이내 가능합니다."))


def test_mapping_override_beats_detection(tmp_path):
    path = tmp_path / "both.jsonl"
    path.write_text(json.dumps({"question": "q1", "answer": "a1", "better": "a2"}) + "\n", encoding="utf-8")
    assert prepare(path).rows[0].messages[-1][:2] == ("assistant", "a1")
    assert prepare(path, {"response": "better"}).rows[0].messages[-1][:2] == ("assistant", "a2")


def test_mapping_to_missing_column_names_the_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"mapping response='nope': d\.jsonl has no such column"):
        prepare(path, parse_mapping("response=nope"))
    with pytest.raises(UserError, match="expected FIELD=COLUMN"):
        parse_mapping("response")


def test_system_prompt_added_to_rows_without_one(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n", encoding="utf-8")
    rows = prepare(path, system_prompt="당신은 세무 전문가입니다.").rows
    assert pairs(rows[0].messages) == (("system", "당신은 세무 전문가입니다."), ("user", "q"), ("assistant", "a"))


def test_json_lines_saved_as_json_and_raw_text_split(tmp_path):
    from workbench.core.data import split_dataset

    path = tmp_path / "notes.json"
    path.write_text("".join(json.dumps({"text": f"세법 메모 {i}"}, ensure_ascii=False) + "\n" for i in range(10)),
                    encoding="utf-8")
    prepared = prepare(path)
    assert (prepared.source.format, prepared.mapping.schema, len(prepared.rows)) == ("jsonl", "text", 10)
    manifest = split_dataset(prepared, tmp_path / "out")
    assert manifest["counts"] == {"train": 8, "val": 1, "test": 1}
