"""Data screen: pick a file, preview its rows, fix the column mapping, see token lengths, split it.

Loading, token counting and splitting run in thread workers (the tokenizer is the `tokenizers` library,
no torch). A model whose tokenizer exists only after a one-time GGUF conversion is converted in a child
process (`python -m workbench.engine.models --materialize`), whose log lines are shown as progress.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.suggester import Suggester
from textual.widget import Widget
from textual.widgets import Button, Header, Input, Label, Static, TabbedContent, TabPane

from workbench.core.errors import UserError
from workbench.core.models import DEFAULT_MODEL
from workbench.ui.jobs import JobClient, start_job
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.widgets.table import Table
from workbench.ui.workers import thread_worker

if TYPE_CHECKING:
    from workbench.core.data import Prepared

# workbench.core.data (formats, tokenizers) is imported where it is used, after the first frame.

PREVIEW_ROWS = 200
BAR_WIDTH = 36


def start_conversion(spec: str, workspace_root: Path) -> JobClient:
    return start_job("workbench.engine.models", ["--materialize", spec, "--workspace", str(workspace_root)],
                     workspace_root / "logs" / "convert-model.log")


# -- results of the thread workers --------------------------------------------------------------------

@dataclass
class DataStatus(Message):
    text: str
    error: bool = False


@dataclass
class DemoReady(Message):
    """The demo dataset is in the workspace; `path` is its source file."""

    path: str


@dataclass
class DatasetLoaded(Message):
    prepared: Prepared


@dataclass
class LengthsMeasured(Message):
    prepared: Prepared  # the one measured: a newer one may have been loaded meanwhile
    stats: dict[str, Any]


@dataclass
class LengthsNote(Message):
    text: str


@dataclass
class LengthsFailed(Message):
    text: str


@dataclass
class ConversionNeeded(Message):
    """The model `spec` has a tokenizer only after its one-time conversion (the user asked for it)."""

    spec: str


class ConversionDone(Message):
    pass


@dataclass
class SplitWritten(Message):
    out: Path
    manifest: dict[str, Any]


class PathSuggester(Suggester):
    """Completes the last path component from the file system (accept with the right arrow)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        path = Path(value).expanduser()
        directory, prefix = (path, "") if value.endswith("/") else (path.parent, path.name)
        try:
            names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir()
                           if p.name.startswith(prefix) and not p.name.startswith("."))
        except OSError:
            return None
        return value + names[0][len(prefix):] if names else None


def clip(text: str, width: int) -> str:
    """One line of at most `width` terminal cells (Hangul takes two)."""
    text = " ".join(text.split())
    if cell_len(text) <= width:
        return text
    while cell_len(text) > width - 1:
        text = text[: -max(1, (cell_len(text) - width) // 2)]
    return text + "…"


def _bars(text: Text, hist: dict[str, list[int]], limit: int) -> None:
    """One bar per bin; red where the bin reaches past the cutoff."""
    peak = max(hist["counts"]) or 1
    for low, high, count in zip(hist["edges"], hist["edges"][1:], hist["counts"]):
        bar = "█" * (round(BAR_WIDTH * count / peak) or (1 if count else 0))
        style = "red" if high - 1 > limit else "green"
        text.append(f"{low:>6}-{high - 1:<6} ")
        text.append(f"{bar:<{BAR_WIDTH}}", style=style)
        text.append(f" {count}\n")


def histogram_text(stats: dict[str, Any]) -> Text:
    text = Text()
    if stats["task"] != "seq2seq":
        _bars(text, stats["histogram"], stats["max_length"])
        return text
    for part in ("source", "target"):  # an encoder-decoder: each has its own cutoff
        text.append(f"{part} tokens (cut at {stats[f'max_{part}_length']})\n", style="bold")
        _bars(text, stats["histograms"][part], stats[f"max_{part}_length"])
    return text


def stats_text(stats: dict[str, Any]) -> Text:
    text = Text()
    measured = (f"sample of {stats['measured_rows']:,} of {stats['rows']:,} rows" if stats["measured_rows"] < stats["rows"]
                else f"{stats['rows']:,} rows")
    text.append(f"{measured} · {stats['model']} · template: {stats['chat_template']}\n")
    text.append(f"{'':9}{'min':>7}{'median':>8}{'p95':>7}{'p99':>7}{'max':>7}\n", style="bold")
    seq2seq = stats["task"] == "seq2seq"
    for part in ("source", "target") if seq2seq else ("prompt", "response", "total"):
        s = stats[part]
        text.append(f"{part:9}{s['min']:>7}{s['median']:>8}{s['p95']:>7}{s['p99']:>7}{s['max']:>7}\n")
    if seq2seq:
        text.append(
            f"cut: {stats['truncated_share']:.1%} (source >{stats['max_source_length']}: "
            f"{stats['source_truncated_share']:.1%}, target >{stats['max_target_length']}: "
            f"{stats['target_truncated_share']:.1%}) · suggested {stats['suggested_max_source_length']}/"
            f"{stats['suggested_max_target_length']}\n"
        )
    else:
        text.append(
            f"cut at {stats['max_length']}: {stats['truncated_share']:.1%} of rows "
            f"(prompt {stats['prompt_truncated_share']:.1%}, answer {stats['response_truncated_share']:.1%}) · "
            f"suggested max_length {stats['suggested_max_length']}\n"
        )
    if stats.get("reasoning"):
        how = ("kept: the chat template renders reasoning_content" if stats["reasoning"] == "kept"
               else "dropped: the chat template has no place for it")
        text.append(f"reasoning in {stats['reasoning_turns']} turns {how}\n", style="cyan")
    if stats["warning"]:
        text.append(f"⚠ {stats['warning']}\n", style="bold red")
    return text


class DataScreen(Screen):
    DEFAULT_CSS = """
    DataScreen Horizontal.row { height: 1; margin: 0 0 1 0; }
    DataScreen .row Label { padding: 0 1 0 0; }
    DataScreen Input, DataScreen Input:focus { border: none; height: 1; padding: 0 1; }
    DataScreen #path { width: 1fr; }
    DataScreen #model { width: 1fr; }
    DataScreen #max-length, DataScreen #max-target-length { width: 7; }
    DataScreen .field { width: 1fr; margin-right: 1; }
    DataScreen #tabs { height: 1fr; }
    DataScreen TabPane { height: 1fr; }
    DataScreen #preview, DataScreen #datasets { height: 1fr; }
    DataScreen #status { height: 1; padding: 0 1; }
    DataScreen .error { color: $error; }
    DataScreen TabPane { padding: 0 1; }
    DataScreen #split-form Label { width: 14; }
    DataScreen #split-form Horizontal { height: 1; }
    DataScreen #do-split { margin-top: 1; }
    """
    BINDINGS = [
        Binding("ctrl+o", "focus_path", "Open file", show=False),
        Binding("ctrl+l", "lengths", "Lengths"),
        Binding("ctrl+s", "split", "Split"),
    ]

    def __init__(self, converter_factory: Callable[[str, Path], JobClient] = start_conversion) -> None:
        super().__init__()
        self.converter_factory = converter_factory
        self.prepared: Prepared | None = None
        self.text_split = None  # how the loaded plain-text file was cut (core.data.TextSplit), reused by split
        self.stats: dict[str, Any] | None = None
        self.converter: JobClient | None = None
        self.suggested_name = ""
        self.tabs_filled = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(classes="row"):
            yield Label("File")
            yield Input(placeholder="path (ctrl+o): .jsonl .json .csv .tsv .parquet .txt .md, dataset dir", id="path",
                        suggester=PathSuggester())
        with TabbedContent(id="tabs"):
            with TabPane("Preview", id="tab-preview"):
                yield Table(id="preview", cursor_type="row", zebra_stripes=True)
            # Filled after the first frame (_fill_hidden_tabs): styling their forms would double its time.
            yield TabPane("Schema", id="tab-schema")
            yield TabPane("Lengths", id="tab-lengths")
            yield TabPane("Split", id="tab-split")
            yield TabPane("Datasets", id="tab-datasets")
        yield Static(id="status")
        yield KeysFooter()

    def _hidden_tab_contents(self) -> dict[str, Widget]:
        def row(*widgets: Widget) -> Horizontal:
            return Horizontal(*widgets, classes="row")

        split_fields = [
            Horizontal(Label(label), Input(value, id=field_id, classes="field",
                                           type="integer" if field_id in ("seed", "augment") else "text"))
            for label, field_id, value in (("Name", "name", ""), ("Ratios", "ratios", "8:1:1"), ("Seed", "seed", "42"),
                                           ("Stratify col", "stratify", ""), ("Augment ×N", "augment", "1"))
        ]
        return {
            "tab-schema": VerticalScroll(
                Static(id="schema-info"),
                row(Label("Mapping"), Input(placeholder="e.g. prompt=질문,response=답변 or schema=qa", id="mapping")),
                row(Label("System"), Input(placeholder="system prompt for rows without one (optional)", id="system")),
                row(Label("Text split"), Input(placeholder=".txt/.md: paragraphs | window (max_length tokens)",
                                               id="text-split")),
            ),
            "tab-lengths": VerticalScroll(
                row(Label("Model"), Input(DEFAULT_MODEL, id="model"),
                    Label(" max_length"), Input("1024", id="max-length", type="integer"),
                    # an encoder-decoder's target cutoff (max_length is then its source's)
                    Label(" target"), Input("256", id="max-target-length", type="integer")),
                Static("Press ctrl+l to measure token lengths.", id="stats"),
                Static(id="histogram"),
            ),
            "tab-split": Vertical(*split_fields, Button("Split (ctrl+s)", id="do-split", variant="primary"),
                                  Static(id="split-result"), id="split-form"),
            "tab-datasets": Table(id="datasets", cursor_type="row", zebra_stripes=True),
        }

    def on_mount(self) -> None:
        self.query_one("#preview", Table).add_columns("#", "src", "prompt", "answer")
        self.query_one("#preview", Table).focus()  # so that the single-key screen switches work at once
        self.call_after_refresh(self._fill_hidden_tabs)

    async def _fill_hidden_tabs(self) -> None:
        mounts = [self.query_one(f"#{pane_id}", TabPane).mount(content)
                  for pane_id, content in self._hidden_tab_contents().items()]
        for mounted in mounts:
            await mounted
        self.query_one("#datasets", Table).add_columns("name", "train", "val", "test", "schema", "created")
        self.tabs_filled = True
        self.refresh_bindings()
        self.refresh_datasets()
        self.open_demo()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("lengths", "split") and not self.tabs_filled:
            return None  # shown disabled for the moment before their tabs exist
        return True

    def on_unmount(self) -> None:
        if self.converter is not None:
            self.converter.close()

    # -- status line ---------------------------------------------------------------------------
    def set_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(text)
        status.set_class(error, "error")

    # -- loading -------------------------------------------------------------------------------
    @thread_worker("preparing the demo dataset", group="load", exclusive=True)
    def open_demo(self) -> None:
        """The first five minutes: the bundled demo, already split into the workspace, is what is shown."""
        from workbench.core.data.demo import DEMO_FILE, ensure_demo_dataset

        try:
            ensure_demo_dataset(self.app.workspace)
        except UserError as error:
            self.post_message(DataStatus(str(error), error=True))
            return
        self.post_message(DemoReady(str(DEMO_FILE)))

    def on_data_status(self, message: DataStatus) -> None:
        self.set_status(message.text, message.error)

    def on_demo_ready(self, message: DemoReady) -> None:
        self.refresh_datasets()
        path_input = self.query_one("#path", Input)
        if not path_input.value:
            path_input.value = message.path
            self.load()

    def action_focus_path(self) -> None:
        self.query_one("#path", Input).focus()

    @on(Input.Submitted, "#path, #mapping, #system, #text-split")
    def _reload(self) -> None:
        self.load()

    def load(self) -> None:
        if not self.tabs_filled:
            return  # the demo load follows at once
        path = self.query_one("#path", Input).value.strip()
        if not path:
            self.set_status("type a file path (→ completes), then enter", error=True)
            return
        self.set_status(f"loading {path} …")
        self._load(path, self.query_one("#mapping", Input).value, self.query_one("#system", Input).value,
                   self.query_one("#stratify", Input).value.strip() or None,
                   self.query_one("#text-split", Input).value.strip() or "paragraphs",
                   self.query_one("#model", Input).value.strip(), self.query_one("#max-length", Input).value)

    @thread_worker("loading the dataset", group="load", exclusive=True)
    def _load(self, path: str, mapping: str, system: str, stratify: str | None, text_mode: str, model: str,
              max_length: str) -> None:
        from workbench.core.data import TextSplit, load_chat_tokenizer, parse_mapping, prepare, window_split
        from workbench.core.data.formats import TEXT_SPLITS

        try:
            if text_mode not in TEXT_SPLITS:
                raise UserError(f"Text split {text_mode!r}: choose {' or '.join(TEXT_SPLITS)}")
            text_split = TextSplit()
            if text_mode == "window":
                if not max_length.isdigit():
                    raise UserError("Text split window: set max_length (Lengths tab) to the window's tokens")
                text_split = window_split(load_chat_tokenizer(model, self.app.workspace), int(max_length))
            prepared = prepare(path, parse_mapping(mapping), skip_bad=True, system_prompt=system, stratify=stratify,
                               text_split=text_split)
        except UserError as error:
            self.post_message(DataStatus(str(error), error=True))
            return
        self.text_split = text_split
        self.post_message(DatasetLoaded(prepared))

    def on_dataset_loaded(self, message: DatasetLoaded) -> None:
        from workbench.core.data.messages import display_text

        self.prepared = prepared = message.prepared
        self.stats = None
        table = self.query_one("#preview", Table)
        rows = []
        for number, row in enumerate(prepared.rows[:PREVIEW_ROWS], start=1):
            prompt = next((m.content for m in reversed(row.messages[:-1]) if m.role == "user"), "")
            rows.append((None, (str(number), str(row.location), clip(prompt, 34),
                                clip(display_text(row.messages[-1]), 28))))
        table.replace_rows(rows)
        report = prepared.report()
        mapping = self.query_one("#mapping", Input)
        mapping.placeholder = f"detected: {prepared.mapping.describe()}"
        self.query_one("#schema-info", Static).update(self._schema_text(report))
        name = self.query_one("#name", Input)
        if not name.value or name.value == self.suggested_name:  # keep a name the user typed
            name.value = self.suggested_name = _dataset_name(prepared.source.path)
        self.query_one("#stats", Static).update("Press ctrl+l to measure token lengths.")
        self.query_one("#histogram", Static).update("")
        dropped = report["bad_rows"] + report["empty_prompt"] + report["empty_response"] + report["duplicates_dropped"]
        features = report["features"]
        extras = [f"{count} {label}" for count, label in ((features["tool_call_rows"], "with tool calls"),
                                                         (features["preference_rows"], "preference pairs"),
                                                         (features["reasoning_turns"], "reasoning turns")) if count]
        self.set_status(f"{prepared.source.path.name}: {report['usable_rows']} usable rows, schema "
                        f"{report['schema']}" + "".join(f", {extra}" for extra in extras)
                        + (f", {dropped} dropped (see Schema)" if dropped else ""))
        self.measure_lengths(convert=False)  # shown at once when the tokenizer is at hand

    @staticmethod
    def _schema_text(report: dict[str, Any]) -> Text:
        from workbench.core.data.prepare import feature_lines

        text = Text()
        encoding = f" ({report['encoding']})" if report["encoding"] else ""
        text.append(f"format {report['format']}{encoding} · schema ", style="")
        text.append(report["schema"], style="bold")
        text.append(f"\nmapping {', '.join(f'{k}={v}' for k, v in report['mapping'].items())}")
        text.append(f"\ncolumns {', '.join(report['columns'])}")
        text.append(f"\n{report['rows_read']} read · {report['usable_rows']} usable · "
                    f"{report['multi_turn_rows']} multi-turn\n")
        for key, label in (("bad_rows", "malformed (skipped)"), ("empty_prompt", "empty prompt"),
                           ("empty_response", "empty answer")):
            if report[key]:
                examples = "; ".join(report[f"{key}_examples"][:3])
                text.append(f"{report[key]} {label}: {examples}\n", style="yellow")
        if report["duplicates_dropped"]:
            text.append(f"{report['duplicates_dropped']} exact duplicates dropped\n", style="yellow")
        for line in feature_lines(report):
            text.append(f"{line}\n", style="cyan")
        return text

    # -- token lengths ---------------------------------------------------------------------------
    @on(Input.Submitted, "#model, #max-length")
    def action_lengths(self) -> None:
        self.query_one("#tabs", TabbedContent).active = "tab-lengths"
        self.measure_lengths(convert=True)

    def measure_lengths(self, convert: bool) -> None:
        """Token statistics in a worker; a GGUF model is converted first only when `convert` (a keypress)."""
        if self.prepared is None:
            self.set_status("load a file first", error=True)
            return
        spec = self.query_one("#model", Input).value.strip()
        limits = []
        for field_id, name in (("max-length", "max_length"), ("max-target-length", "target")):
            try:
                limits.append(int(self.query_one(f"#{field_id}", Input).value or "0"))
            except ValueError:
                limits.append(0)
            if limits[-1] < 1:
                self.set_status(f"{name}: a positive number of tokens", error=True)
                return
        self.query_one("#stats", Static).update(f"measuring with {spec} …")
        self._measure(self.prepared, spec, *limits, convert)

    @thread_worker("measuring token lengths", group="stats", exclusive=True)
    def _measure(self, prepared: Prepared, spec: str, max_length: int, max_target_length: int, convert: bool) -> None:
        from workbench.core.data import NeedsConversion, load_chat_tokenizer, token_statistics

        try:
            tok = load_chat_tokenizer(spec, self.app.workspace)
            stats = token_statistics([row.messages for row in prepared.rows], tok, max_length,
                                     tools=[row.tools for row in prepared.rows], max_target_length=max_target_length)
        except NeedsConversion:
            if convert:
                self.post_message(ConversionNeeded(spec))
            else:
                self.post_message(LengthsNote(f"{spec} is converted once (about 30 s) before its tokenizer can be "
                                              f"used: press ctrl+l."))
            return
        except UserError as error:
            self.post_message(LengthsFailed(str(error)))
            return
        self.post_message(LengthsMeasured(prepared, stats))

    def on_lengths_note(self, message: LengthsNote) -> None:
        """Only while the screen is still up (the app may be closing under the worker)."""
        for stats in self.query("#stats").results(Static):
            stats.update(message.text)

    def on_lengths_failed(self, message: LengthsFailed) -> None:
        self.query_one("#stats", Static).update(Text(message.text, style="red"))
        self.set_status(message.text, error=True)

    def on_lengths_measured(self, message: LengthsMeasured) -> None:
        stats = message.stats
        if message.prepared is not self.prepared:
            return  # a newer file was loaded meanwhile
        self.stats = stats
        self.query_one("#stats", Static).update(stats_text(stats))
        self.query_one("#histogram", Static).update(histogram_text(stats))
        p99 = (f"source {stats['source']['p99']}, target {stats['target']['p99']}" if stats["task"] == "seq2seq"
               else f"total {stats['total']['p99']}")
        self.set_status(stats["warning"] or f"token lengths measured: p99 {p99}",
                        error=bool(stats["warning"]))

    def on_conversion_needed(self, message: ConversionNeeded) -> None:
        self.query_one("#stats", Static).update(f"{message.spec}: converting the model once for its tokenizer …")
        self._run_conversion(message.spec)

    @thread_worker("converting the model for its tokenizer", group="convert", exclusive=True)
    def _run_conversion(self, spec: str) -> None:
        self.converter = client = self.converter_factory(spec, self.app.workspace.root)
        failed = None
        try:
            for message in client.messages():
                if message.get("type") == "log":
                    self.post_message(DataStatus(f"{spec}: {message.get('message')}"))
                elif message.get("type") == "error":
                    failed = str(message.get("message"))
        finally:
            client.close()
            self.converter = None
        if failed:
            self.post_message(LengthsFailed(f"conversion failed: {failed}"))
        else:
            self.post_message(ConversionDone())

    def on_conversion_done(self) -> None:
        self.measure_lengths(False)

    # -- split -----------------------------------------------------------------------------------
    @on(Button.Pressed, "#do-split")
    def action_split(self) -> None:
        from workbench.core.data import parse_ratios

        if self.prepared is None:
            self.set_status("load a file first", error=True)
            return
        values = {field: self.query_one(f"#{field}", Input).value.strip()
                  for field in ("name", "ratios", "seed", "stratify", "augment")}
        try:
            if not values["name"]:
                raise UserError("Name: give the prepared dataset a name")
            ratios = parse_ratios(values["ratios"])
            out = self.app.workspace.dataset_dir(values["name"])
            seed = int(values["seed"] or 42)
            augment = int(values["augment"] or 1)
        except (UserError, ValueError) as error:
            self.set_status(str(error), error=True)
            return
        self.query_one("#tabs", TabbedContent).active = "tab-split"
        self.set_status(f"splitting into {out} …")
        self._split(self.prepared, self.query_one("#mapping", Input).value, out, ratios, seed, augment,
                    values["stratify"] or None)

    @thread_worker("splitting the dataset", group="split", exclusive=True)
    def _split(self, prepared: Prepared, mapping: str, out: Path, ratios, seed: int, augment: int,
               stratify: str | None) -> None:
        from workbench.core.data import parse_mapping, prepare, split_dataset

        try:
            if stratify != prepared.stratify:  # the strata are read while loading
                prepared = prepare(prepared.source.path, parse_mapping(mapping), skip_bad=True,
                                   system_prompt=prepared.system_prompt, stratify=stratify, text_split=self.text_split)
            manifest = split_dataset(prepared, out, ratios, seed=seed, augment_templates=augment,
                                     token_stats=self.stats if self.stats and self.stats["rows"] == len(prepared.rows)
                                     else None)
        except UserError as error:
            self.post_message(DataStatus(str(error), error=True))
            return
        self.post_message(SplitWritten(out, manifest))

    def on_split_written(self, message: SplitWritten) -> None:
        out, counts = message.out, message.manifest["counts"]
        text = f"wrote {out}\ntrain {counts['train']} · val {counts['val']} · test {counts['test']} rows"
        self.query_one("#split-result", Static).update(text)
        self.set_status(f"split done: {out.name} (train {counts['train']}, val {counts['val']}, test {counts['test']})")
        self.refresh_datasets()

    # -- prepared datasets -----------------------------------------------------------------------
    def refresh_datasets(self) -> None:
        from workbench.core.data import list_datasets

        table = self.query_one("#datasets", Table)
        table.replace_rows(
            (entry["name"], (entry["name"], *(str(entry["counts"].get(s, "-")) for s in ("train", "val", "test")),
                             entry["schema"] or "-", (entry["created"] or "-")[:16]))
            for entry in list_datasets(self.app.workspace))


def _dataset_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.") or "dataset"
    return name[:100]
