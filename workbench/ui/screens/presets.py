"""Presets: browse presets by family, see what differs from the family default, edit fields with inline
validation, watch the memory estimate follow, save as a user preset, and start a run from it.

Pure core (no torch): validation is the run schema itself, the estimate is core.memory from config.json,
per GPU for the preset's `distributed` settings, next to the GPUs detected here (core.memory.detect_gpus).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from workbench.core.config import RunConfig, validate_config
from workbench.core.errors import UserError
from workbench.core.family import FAMILIES
from workbench.core.presets import Preset, differences, family_default, flatten, list_presets, save_user_preset
from workbench.ui.gpus import GpusDetected, detect_gpus_in_background
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.widgets.table import Table

HIDDEN_FIELDS = ("preset", "description", "family")  # shown above the table, not edited as cells
HIDDEN_SECTIONS = ("data.",)  # a run's dataset is chosen when the run starts, not in a preset


def set_dotted(data: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with `field` ('lora.r') set to `value`."""
    result = copy.deepcopy(data)
    node = result
    *sections, key = field.split(".")
    for section in sections:
        child = node.get(section)
        node[section] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    node[key] = value
    return result


def parse_value(text: str) -> Any:
    """What the user typed, read like a YAML scalar or flow list ('16', 'true', '[q_proj, v_proj]')."""
    if not text.strip():
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def format_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


class PresetsScreen(Screen):
    DEFAULT_CSS = """
    PresetsScreen #preset-list {
        width: 24;
        height: 1fr;
    }
    PresetsScreen #detail {
        width: 1fr;
        height: 1fr;
        padding-left: 1;
    }
    PresetsScreen #title {
        text-style: bold;
        height: 1;
    }
    PresetsScreen #description {
        height: auto;
        max-height: 3;
        color: $text-muted;
    }
    PresetsScreen #fields {
        height: 1fr;
    }
    PresetsScreen #field-value {
        height: 2;
        color: $text-muted;
    }
    PresetsScreen #editor {
        height: auto;
        display: none;
    }
    PresetsScreen #editor.-open {
        display: block;
    }
    PresetsScreen #editor Input.-invalid {
        border: tall $error;
    }
    PresetsScreen #edit-error {
        color: $error;
        height: auto;
    }
    PresetsScreen #memory {
        height: auto;
        max-height: 7;
    }
    """
    BINDINGS = [
        # The stepping and edit keys are named in the list's and the table's titles, so that the Footer
        # keeps room for the mode keys at 80 columns.
        Binding("right_square_bracket", "step(1)", "Next", key_display="]", show=False),
        Binding("left_square_bracket", "step(-1)", "Prev", key_display="[", show=False),
        Binding("f", "next_family", "Family", show=False),
        Binding("i", "edit", "Edit", show=False),
        Binding("w", "save", "Save as"),
        Binding("u", "revert", "Revert", show=False),
        Binding("n", "start_run", "Run"),
        Binding("escape", "close_editor", "Cancel", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.presets: dict[str, Preset] = {}
        self.edits: dict[str, dict[str, Any]] = {}  # preset name -> edited partial config (unsaved)
        self.current: str | None = None
        self.editing: str | None = None  # the field being edited, or "<save>" while naming a save
        self.gpus: list | None = None  # core.memory.GpuInfo list once detected (in a thread: nvidia-smi is slow)

    # -- layout -----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield OptionList(id="preset-list")
            with Vertical(id="detail"):
                yield Label("", id="title")
                yield Static("", id="description")
                yield Table(id="fields", cursor_type="row", zebra_stripes=True)
                # the highlighted field in full: a long value (target_modules) is cut in the table at 80 columns
                yield Static("", id="field-value", markup=False)
                with Vertical(id="editor"):
                    yield Label("", id="edit-label")
                    yield Input(id="edit-input")
                    yield Static("", id="edit-error")
                yield Static("", id="memory")
        yield KeysFooter()

    def on_mount(self) -> None:
        table = self.query_one("#fields", Table)
        table.add_column("field (* changed) enter/i edits", key="field", width=30)
        table.add_column("value", key="value")
        self.reload()
        detect_gpus_in_background(self)

    def on_gpus_detected(self, message: GpusDetected) -> None:
        self.gpus = message.gpus
        self.refresh_memory()

    # -- the list ---------------------------------------------------------------------------------
    def reload(self, select: str | None = None) -> None:
        try:
            presets = list_presets(self.app.workspace)
        except UserError as error:  # a broken user preset: say which, keep the screen usable
            self.notify(str(error), severity="error", timeout=10)
            presets = list_presets(None)
        self.presets = {preset.name: preset for preset in presets}
        options: list[Option | None] = []
        family = object()
        for preset in presets:
            if preset.family != family:
                family = preset.family
                title = FAMILIES[family].name if family in FAMILIES else "other"
                options.append(Option(f"── {title}", disabled=True))
            marker = "" if preset.builtin else " (user)"
            options.append(Option(f"  {preset.name}{marker}", id=preset.name))
        option_list = self.query_one("#preset-list", OptionList)
        option_list.border_title = "[ ]:step f:family"
        option_list.clear_options()
        option_list.add_options(options)
        target = select if select in self.presets else (self.current if self.current in self.presets else None)
        target = target or next(iter(self.presets), None)
        if target is not None:
            option_list.highlighted = option_list.get_option_index(target)
            self.show_preset(target)
        option_list.focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_id and event.option_id != self.current:
            self.show_preset(event.option_id)

    def action_step(self, delta: int) -> None:
        names = list(self.presets)
        if not names:
            return
        position = names.index(self.current) if self.current in names else -1
        self._select(names[(position + delta) % len(names)])

    def action_next_family(self) -> None:
        names = list(self.presets)
        if not names:
            return
        start = names.index(self.current) if self.current in names else 0
        family = self.presets[names[start]].family
        rotated = names[start + 1:] + names[: start + 1]
        self._select(next((n for n in rotated if self.presets[n].family != family), names[start]))

    def _select(self, name: str) -> None:
        self.close_editor()
        option_list = self.query_one("#preset-list", OptionList)
        option_list.highlighted = option_list.get_option_index(name)
        self.show_preset(name)

    # -- the detail -------------------------------------------------------------------------------
    def data_of(self, name: str) -> dict[str, Any]:
        return self.edits.get(name, self.presets[name].data)

    def config_of(self, name: str) -> RunConfig:
        return validate_config(self.data_of(name), str(self.presets[name].path))

    def show_preset(self, name: str) -> None:
        self.current = name
        preset = self.presets[name]
        modified = " [modified: w saves]" if name in self.edits else ""
        source = "built-in" if preset.builtin else "user"
        self.query_one("#title", Label).update(f"{name} ({preset.method}, {source}){modified}")
        self.query_one("#description", Static).update(self.data_of(name).get("description") or "")
        config = self.config_of(name)  # validated once for both
        self.refresh_fields(config)
        self.refresh_memory(config)

    def refresh_fields(self, config: RunConfig) -> None:
        table = self.query_one("#fields", Table)
        row = table.cursor_row
        rows = []
        default = family_default(self.presets[self.current])
        changed = differences(config, default.resolve() if default else None)
        section = None
        for field, value in flatten(config.model_dump(mode="json")).items():
            if field in HIDDEN_FIELDS or field.startswith(HIDDEN_SECTIONS):
                continue
            head, _, leaf = field.rpartition(".")
            if head != section:  # a heading row per section keeps the leaf names short enough for 80 columns
                section = head
                if head:
                    rows.append((f"§{head}", (Text(f"── {head}", style="bold"), "")))
            mark = "*" if field in changed else " "
            text = format_value(value)
            if field in changed:
                text += f"  (default {format_value(changed[field][1])})"
            elif field == "model.name_or_path" and "name_or_path" not in (self.data_of(self.current).get("model") or {}):
                text += "  (not in the preset: New run or --model sets it)"
            # Text, not a str: DataTable reads a str as markup, and "[q_proj, v_proj]" is a (hidden) tag
            rows.append((field, (f"{mark} {leaf}", Text(text))))
        table.replace_rows(rows)
        if row:
            table.move_cursor(row=min(row, table.row_count - 1))

    def refresh_memory(self, config: RunConfig | None = None) -> None:
        from workbench.core import distributed
        from workbench.core.memory import estimate_run

        memory = self.query_one("#memory", Static)
        if self.current is None:
            memory.update("")
            return
        if config is None:  # GPUs detected: the shown preset's
            config = self.config_of(self.current)
        gpus = self.gpus or []
        try:
            estimate = estimate_run(config, self.app.workspace, distributed.smallest_gpu_in_use(config, gpus),
                                    reference_if_other_family=True, cuda=self.gpus is None or bool(gpus))
        except UserError as error:
            memory.update(f"memory: {error}")
            return
        gib = 1024**3
        model = config.model.name_or_path
        reference = "" if estimate.model == model else f" ({config.family} reference: {model} is not {config.family})"
        lines = [
            f"memory for {estimate.model}{reference}: {estimate.verdict()}",
            f"GiB: weights {estimate.weights_bytes / gib:.2f} · adapter+optim "
            f"{(estimate.adapter_bytes + estimate.gradients_bytes + estimate.optimizer_bytes) / gib:.2f} · "
            f"activ. {estimate.activations_bytes / gib:.2f} · logits {estimate.logits_bytes / gib:.2f}",
        ]
        if self.gpus is None:
            lines.append("GPUs: detecting...")
            memory.update("\n".join(lines))
            return
        count = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" if gpus else "no CUDA GPU"
        lines.append(f"{count} here · estimate {distributed.sharding_note(config, len(gpus))}")
        if distributed.needs_accelerate(config):
            try:
                distributed.check(config, len(gpus))
            except UserError as refusal:
                lines.append(f"not on this machine: {refusal}")
        memory.update("\n".join(lines))

    # -- editing ----------------------------------------------------------------------------------
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        field = str(event.row_key.value)
        text = "" if field.startswith("§") else f"{field} = {event.data_table.get_row(event.row_key)[1]}"
        self.query_one("#field-value", Static).update(text)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.open_editor(str(event.row_key.value))

    def action_edit(self) -> None:
        table = self.query_one("#fields", Table)
        if self.current is None or table.row_count == 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        self.open_editor(str(key.value))

    def open_editor(self, field: str) -> None:
        if field.startswith("§"):
            return  # a section heading
        value = flatten(self.config_of(self.current).model_dump(mode="json"))[field]
        self._open(field, f"{field} (enter applies, escape cancels)", format_value(value))

    def action_save(self) -> None:
        if self.current is None:
            return
        preset = self.presets[self.current]
        suggestion = self.current if not preset.builtin else f"{self.current}-custom"
        self._open("<save>", f"save as user preset in {self.app.workspace.presets}/ - name:", suggestion)

    def _open(self, what: str, label: str, text: str) -> None:
        self.editing = what
        self.query_one("#edit-label", Label).update(label)
        self.query_one("#edit-error", Static).update("")
        editor_input = self.query_one("#edit-input", Input)
        editor_input.value = text
        editor_input.remove_class("-invalid")
        self.query_one("#editor").add_class("-open")
        editor_input.focus()

    def action_close_editor(self) -> None:
        self.close_editor()

    def leave_field(self) -> None:
        """Escape in the editor cancels the edit (and focuses the field table)."""
        if self.editing is None:
            self.set_focus(None)
        else:
            self.close_editor()

    def close_editor(self) -> None:
        if self.editing is None:
            return
        self.editing = None
        self.query_one("#editor").remove_class("-open")
        self.query_one("#fields", Table).focus()

    def candidate(self, text: str) -> dict[str, Any]:
        """The preset with the edited field set; UserError (one line) when the schema refuses it."""
        data = set_dotted(self.data_of(self.current), self.editing, parse_value(text))
        config = validate_config(data, self.current)
        # store the value as the schema read it ('5e-5' is a string to YAML, a float to the schema)
        return set_dotted(data, self.editing, flatten(config.model_dump(mode="json"))[self.editing])

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.editing is None or self.editing == "<save>":
            return
        try:
            self.candidate(event.value)
        except UserError as error:
            self._refuse(str(error))
        else:
            self._refuse("")

    def _refuse(self, message: str) -> None:
        self.query_one("#edit-error", Static).update(message)
        self.query_one("#edit-input", Input).set_class(bool(message), "-invalid")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.editing == "<save>":
            self.save_as(event.value.strip())
            return
        try:
            data = self.candidate(event.value)
        except UserError as error:
            self._refuse(str(error))
            return
        self.edits[self.current] = data
        self.close_editor()
        self.show_preset(self.current)

    def save_as(self, name: str) -> None:
        data = self.data_of(self.current)
        try:
            saved = save_user_preset(self.app.workspace, name, data)
        except UserError as error:
            self._refuse(str(error))
            return
        self.edits.pop(self.current, None)
        self.close_editor()
        self.notify(f"saved {saved.path}")
        self.reload(select=saved.name)

    def action_revert(self) -> None:
        if self.current in self.edits:
            del self.edits[self.current]
            self.show_preset(self.current)

    # -- hand-off to training -------------------------------------------------------------------
    def action_start_run(self) -> None:
        if self.current is None:
            return
        if self.current in self.edits:
            self.notify("this preset has unsaved edits: save it as a user preset (w) first", severity="warning")
            return
        start = getattr(self.app, "start_new_run", None)
        if start is None:
            self.notify("starting runs is not available here", severity="warning")
            return
        start(self.current)
