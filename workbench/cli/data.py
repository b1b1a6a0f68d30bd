"""`lora-workbench data inspect FILE` and `data split FILE --out DIR`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from workbench.cli.output import print_json, print_table

TEXT_SPLITS = ("paragraphs", "window")  # as workbench.core.data.formats, which the CLI imports only when run


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect, validate and split datasets")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    mapping_help = "column mapping FIELD=COLUMN[,...], e.g. prompt=질문,response=답변 or schema=qa (repeatable)"
    text_split_help = (".txt/.md files: a row per paragraph (blank lines), or windows of --max-length tokens "
                       "of --model (default paragraphs)")

    inspect = actions.add_parser("inspect", help="detected format, schema, validation and token-length statistics")
    inspect.add_argument("file", help=".jsonl .json .csv .tsv .parquet .txt .md or a datasets.save_to_disk directory")
    inspect.add_argument("--model", help="measure token lengths with this model's tokenizer and chat template")
    inspect.add_argument("--max-length", type=int, default=1024,
                         help="cutoff length to check (default 1024); an encoder-decoder's source cutoff")
    inspect.add_argument("--max-target-length", type=int, metavar="N",
                         help="an encoder-decoder's target cutoff (default: --max-length)")
    inspect.add_argument("--sample", type=int, default=100_000, metavar="N",
                         help="measure token lengths on a seeded sample of N rows when there are more "
                              "(default 100000; 0 measures every row)")
    inspect.add_argument("--mapping", action="append", help=mapping_help)
    inspect.add_argument("--skip-bad", action="store_true", help="skip malformed rows instead of failing")
    inspect.add_argument("--system-prompt", help="system message added to rows that have none")
    inspect.add_argument("--text-split", choices=TEXT_SPLITS, default="paragraphs", help=text_split_help)
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=cmd_inspect)

    split = actions.add_parser("split", help="validate, de-duplicate and split into train/val/test .jsonl")
    split.add_argument("file")
    split.add_argument("--out", required=True, help="output directory, or a bare NAME for <workspace>/datasets/NAME")
    split.add_argument("--ratios", default="8:1:1", help="TRAIN:VAL:TEST (default 8:1:1)")
    split.add_argument("--seed", type=int, default=42)
    split.add_argument("--stratify", metavar="COL", help="keep this column's values in proportion in every split")
    split.add_argument("--skip-bad", action="store_true", help="skip malformed rows instead of failing")
    split.add_argument("--mapping", action="append", help=mapping_help)
    split.add_argument("--system-prompt", help="system message added to rows that have none")
    split.add_argument("--augment-templates", type=int, default=1, metavar="N",
                       help="dialogue summaries: N phrasings of the instruction per training row (default 1)")
    split.add_argument("--text-split", choices=TEXT_SPLITS, default="paragraphs", help=text_split_help)
    split.add_argument("--model", help="with --text-split window: the model whose tokens are counted")
    split.add_argument("--max-length", type=int, default=1024, help="with --text-split window: tokens per window")
    split.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    split.add_argument("--json", action="store_true")
    split.set_defaults(func=cmd_split)


def _prepare(args: argparse.Namespace, tok=None):
    from workbench.core.data import TextSplit, parse_mapping, prepare, window_split
    from workbench.core.errors import UserError

    text_split = TextSplit()
    if args.text_split == "window":
        if tok is None:
            raise UserError("--text-split window: name the model whose tokens make a window (--model M)")
        text_split = window_split(tok, args.max_length)
    return prepare(args.file, parse_mapping(args.mapping), skip_bad=args.skip_bad,
                   system_prompt=args.system_prompt, stratify=getattr(args, "stratify", None), text_split=text_split)


def _tokenizer(spec: str, workspace):
    """The model's tokenizer; a GGUF model is converted once first (that needs the engine, hence torch)."""
    from workbench.core.data import NeedsConversion, load_chat_tokenizer

    try:
        return load_chat_tokenizer(spec, workspace)
    except NeedsConversion as needed:
        from workbench.engine.models import materialize

        materialize(needed.ref, log=lambda message: print(message, file=sys.stderr))
        return load_chat_tokenizer(spec, workspace)


def _print_report(report: dict[str, Any]) -> None:
    print(f"file         {report['source']}")
    print(f"format       {report['format']}" + (f" ({report['encoding']})" if report["encoding"] else ""))
    print(f"schema       {report['schema']}  mapping: "
          + ", ".join(f"{k}={v}" for k, v in report["mapping"].items()))
    print(f"rows         {report['rows_read']} read, {report['usable_rows']} usable, "
          f"{report['multi_turn_rows']} multi-turn")
    for key, label in (("bad_rows", "malformed"), ("empty_prompt", "empty prompt"),
                       ("empty_response", "empty answer")):
        if report[key]:
            examples = report[f"{key}_examples"]
            print(f"{label:12} {report[key]} (dropped): {'; '.join(examples)}")
    if report["duplicates_dropped"]:
        print(f"duplicates   {report['duplicates_dropped']} exact duplicates dropped")
    from workbench.core.data.prepare import feature_lines

    for line in feature_lines(report):
        print(f"note         {line}")


def _print_histogram(title: str, hist: dict[str, list[int]]) -> None:
    peak = max(hist["counts"]) or 1
    print(f"\n{title}")
    for low, high, count in zip(hist["edges"], hist["edges"][1:], hist["counts"]):
        print(f"{low:>7}-{high - 1:<7} {'#' * max(1 if count else 0, round(40 * count / peak)):40} {count}")


def _print_stats(stats: dict[str, Any]) -> None:
    sampled = (f", estimated from a sample of {stats['measured_rows']:,} of {stats['rows']:,} rows"
               if stats["measured_rows"] < stats["rows"] else "")
    seq2seq = stats["task"] == "seq2seq"
    limits = (f"max_source_length {stats['max_source_length']}, max_target_length {stats['max_target_length']}"
              if seq2seq else f"max_length {stats['max_length']}")
    print(f"\ntoken lengths ({stats['model']}, chat template: {stats['chat_template']}, {limits}{sampled})")
    columns = ["min", "median", "p95", "p99", "max", "mean"]
    parts = ("source", "target") if seq2seq else ("prompt", "response", "total")
    print_table(["", *columns], [[part, *(stats[part][c] for c in columns)] for part in parts])
    if seq2seq:
        _print_histogram("source tokens", stats["histograms"]["source"])
        _print_histogram("target tokens", stats["histograms"]["target"])
        print(f"\ntruncated: {stats['truncated_share']:.2%} of rows (source cut {stats['source_truncated_share']:.2%}, "
              f"target cut {stats['target_truncated_share']:.2%}); suggested max_source_length "
              f"{stats['suggested_max_source_length']}, max_target_length {stats['suggested_max_target_length']} "
              f"(cover p99)")
    else:
        _print_histogram("total tokens", stats["histogram"])
        print(f"\ntruncated at {stats['max_length']}: {stats['truncated_share']:.2%} of rows "
              f"(prompt cut {stats['prompt_truncated_share']:.2%}, answer cut {stats['response_truncated_share']:.2%}); "
              f"suggested max_length {stats['suggested_max_length']} (covers p99)")
    if stats["warning"]:
        print(f"warning: {stats['warning']}", file=sys.stderr)


def cmd_inspect(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.data import token_statistics

    tok = _tokenizer(args.model, workspace_of(args)) if args.model else None
    prepared = _prepare(args, tok)
    report = prepared.report()
    report["preview"] = [[m.to_dict() for m in row.messages] for row in prepared.rows[:3]]
    stats = None
    if tok is not None:
        stats = token_statistics([row.messages for row in prepared.rows], tok, args.max_length, sample=args.sample,
                                 tools=[row.tools for row in prepared.rows], max_target_length=args.max_target_length)
    if args.json:
        print_json({**report, "token_stats": stats})
        return 0
    _print_report(report)
    if stats:
        _print_stats(stats)
    else:
        print("\n(token-length statistics: add --model M, e.g. --model smollm2-135m)")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.data import parse_ratios, resolve_out, split_dataset

    ratios = parse_ratios(args.ratios)
    out = resolve_out(args.out, workspace_of(args))
    tok = _tokenizer(args.model, workspace_of(args)) if args.model and args.text_split == "window" else None
    prepared = _prepare(args, tok)
    manifest = split_dataset(prepared, out, ratios, seed=args.seed, augment_templates=args.augment_templates,
                             overwrite=args.overwrite)
    if args.json:
        print_json({"path": str(out), **manifest})
        return 0
    counts = manifest["counts"]
    validation = manifest["validation"]
    print(f"wrote {out}: train {counts['train']}, val {counts['val']}, test {counts['test']} rows "
          f"(schema {manifest['schema']}, seed {manifest['seed']})")
    dropped = [f"{validation[k]} {label}" for k, label in (("bad_rows", "malformed"), ("empty_prompt", "empty prompt"),
               ("empty_response", "empty answer"), ("duplicates_dropped", "duplicates")) if validation[k]]
    if dropped:
        print("dropped: " + ", ".join(dropped))
    return 0


