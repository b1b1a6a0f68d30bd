"""The comparison report: base vs fine-tuned metrics with deltas, loss curves, run config, examples.

Two files in runs/<id>/eval/: report.md (reads well in a terminal or a Git forge) and report.html,
self-contained (inline CSS and SVG, no scripts, no external assets) so it can be copied off a GPU box
and opened anywhere.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from workbench.core import atomic
from workbench.core.events import EvalEvent, Event, StepEvent

# (key, label, higher is better, format)
METRIC_ROWS: tuple[tuple[str, str, bool, str], ...] = (
    ("perplexity", "Perplexity (answer tokens)", False, "{:.3f}"),
    ("rouge1", "ROUGE-1 F1", True, "{:.4f}"),
    ("rouge2", "ROUGE-2 F1", True, "{:.4f}"),
    ("rougeL", "ROUGE-L F1", True, "{:.4f}"),
    ("bleu", "BLEU", True, "{:.2f}"),
    ("chrf", "chrF", True, "{:.2f}"),
    ("exact_match", "Exact match", True, "{:.3f}"),
)
_SPARK = "▁▂▃▄▅▆▇█"


def _fmt(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def metric_table(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Rows of label/base/tuned/delta/verdict, shared by both report formats and the Evaluate screen."""
    rows = []
    for key, label, higher_better, pattern in METRIC_ROWS:
        base, tuned = metrics["base"].get(key), metrics["tuned"].get(key)
        delta = metrics.get("delta", {}).get(key)
        if delta is None or delta == 0:
            verdict = "same" if delta == 0 else "-"
        else:
            verdict = "better" if (delta > 0) == higher_better else "worse"
        rows.append({
            "key": key, "label": label, "base": _fmt(base, pattern), "tuned": _fmt(tuned, pattern),
            "delta": "-" if delta is None else ("+" if delta > 0 else "") + pattern.format(delta),
            "verdict": verdict,
        })
    return rows


def loss_series(events: Sequence[Event]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {"train loss": [], "eval loss": []}
    for event in events:
        if isinstance(event, StepEvent) and event.loss is not None and event.step is not None:
            series["train loss"].append((event.step, event.loss))
        elif isinstance(event, EvalEvent) and event.eval_loss is not None and event.step is not None:
            series["eval loss"].append((event.step, event.eval_loss))
    return series


def sparkline(values: Sequence[float], width: int = 40) -> str:
    if not values:
        return ""
    if len(values) > width:  # sample evenly, keeping the last point
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_SPARK[min(len(_SPARK) - 1, int((v - low) / span * len(_SPARK)))] for v in values)


def loss_curve_svg(events: Sequence[Event], width: int = 640, height: int = 260) -> str:
    """Train and eval loss against the step, as inline SVG."""
    series = {name: points for name, points in loss_series(events).items() if points}
    if not series:
        return "<p class='muted'>No loss was recorded in events.jsonl.</p>"
    left, right, top, bottom = 56, 16, 16, 40
    all_points = [p for points in series.values() for p in points]
    min_x, max_x = min(p[0] for p in all_points), max(p[0] for p in all_points)
    min_y, max_y = min(p[1] for p in all_points), max(p[1] for p in all_points)
    span_x, span_y = (max_x - min_x) or 1.0, (max_y - min_y) or 1.0

    def x(step: float) -> float:
        return left + (step - min_x) / span_x * (width - left - right)

    def y(loss: float) -> float:
        return top + (max_y - loss) / span_y * (height - top - bottom)

    colors = {"train loss": "#2563eb", "eval loss": "#dc2626"}
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='{width}' height='{height}' "
        f"role='img' aria-label='loss curves'>",
        f"<rect x='{left}' y='{top}' width='{width - left - right}' height='{height - top - bottom}' "
        "fill='none' stroke='#ccc'/>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = max_y - fraction * span_y
        parts.append(f"<text x='{left - 6}' y='{y(value) + 4:.1f}' text-anchor='end' font-size='11'>{value:.3g}</text>")
        step = min_x + fraction * span_x
        parts.append(f"<text x='{x(step):.1f}' y='{height - bottom + 16}' text-anchor='middle' font-size='11'>"
                     f"{step:.0f}</text>")
    parts.append(f"<text x='{(left + width - right) / 2:.0f}' y='{height - 6}' text-anchor='middle' "
                 "font-size='11'>step</text>")
    for index, (name, points) in enumerate(series.items()):
        color = colors.get(name, "#555")
        coords = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
        if len(points) == 1:
            parts.append(f"<circle cx='{x(points[0][0]):.1f}' cy='{y(points[0][1]):.1f}' r='3' fill='{color}'/>")
        else:
            parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{coords}'/>")
        parts.append(f"<text x='{width - right - 4}' y='{top + 14 + 14 * index}' text-anchor='end' font-size='11' "
                     f"fill='{color}'>{html.escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _md_cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def render_markdown(metrics: dict[str, Any], predictions: Sequence[dict[str, Any]], config: dict[str, Any],
                    events: Sequence[Event]) -> str:
    lines = [
        f"# Evaluation of run {metrics['run_id']}",
        "",
        f"Model `{metrics['model']}` ({metrics['method']}), split `{metrics['split']}` "
        f"({metrics['num_examples']} examples from `{metrics['data_file']}`). Base and fine-tuned answers use the "
        f"same greedy decoding, max {metrics['generation']['max_new_tokens']} new tokens.",
        "",
        "## Metrics",
        "",
        "| Metric | Base | Fine-tuned | Delta | |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {r['label']} | {r['base']} | {r['tuned']} | {r['delta']} | {r['verdict']} |"
              for r in metric_table(metrics)]
    signature = metrics["tuned"].get("bleu_signature")
    lines += ["", f"ROUGE uses a Unicode word tokenizer that keeps Hangul; BLEU signature `{signature}`.", ""]
    lines += ["## Loss", ""]
    series = loss_series(events)
    if not any(series.values()):
        lines.append("No loss was recorded in events.jsonl.")
    for name, points in series.items():
        if points:
            values = [v for _, v in points]
            lines.append(f"- {name}: {values[0]:.4f} at step {points[0][0]} → {values[-1]:.4f} at step "
                         f"{points[-1][0]} (min {min(values):.4f})  `{sparkline(values)}`")
    lines += ["", "## Run config", "", "```yaml", yaml.safe_dump(config, allow_unicode=True, sort_keys=False).rstrip(),
              "```", "", "## Examples", "",
              "| # | Prompt | Reference | Base | Fine-tuned | ROUGE-L base → tuned |", "|---:|---|---|---|---|---|"]
    for p in predictions:
        lines.append(
            f"| {p['index']} | {_md_cell(p['prompt'])} | {_md_cell(p['reference'])} | {_md_cell(p['base'])} | "
            f"{_md_cell(p['tuned'])} | {p['base_scores']['rougeL']:.3f} → {p['tuned_scores']['rougeL']:.3f} |"
        )
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI','Noto Sans KR',sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#111}
table{border-collapse:collapse;margin:1rem 0;width:100%}th,td{border:1px solid #ddd;padding:.4rem .6rem;
vertical-align:top;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.better{color:#15803d}.worse{color:#b91c1c}.muted{color:#666}pre{background:#f6f6f6;padding:1rem;overflow:auto}
td.text{white-space:pre-wrap;max-width:22rem}
"""


def render_html(metrics: dict[str, Any], predictions: Sequence[dict[str, Any]], config: dict[str, Any],
                events: Sequence[Event]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r['label'])}</td><td class='num'>{e(r['base'])}</td><td class='num'>{e(r['tuned'])}</td>"
        f"<td class='num {r['verdict']}'>{e(r['delta'])}</td><td class='{r['verdict']}'>{e(r['verdict'])}</td></tr>"
        for r in metric_table(metrics)
    )
    examples = "".join(
        f"<tr><td class='num'>{p['index']}</td><td class='text'>{e(p['prompt'])}</td>"
        f"<td class='text'>{e(p['reference'])}</td><td class='text'>{e(p['base'])}</td>"
        f"<td class='text'>{e(p['tuned'])}</td><td class='num'>{p['base_scores']['rougeL']:.3f} → "
        f"{p['tuned_scores']['rougeL']:.3f}</td></tr>"
        for p in predictions
    )
    config_yaml = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    generation = json.dumps(metrics["generation"], ensure_ascii=False)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation of {e(metrics['run_id'])}</title>
<style>{_CSS}</style></head><body>
<h1>Evaluation of run {e(metrics['run_id'])}</h1>
<p>Model <code>{e(str(metrics['model']))}</code> ({e(str(metrics['method']))}), split <code>{e(metrics['split'])}</code>
({metrics['num_examples']} examples from <code>{e(metrics['data_file'])}</code>).
Base and fine-tuned answers use the same greedy decoding: <code>{e(generation)}</code>.</p>
<h2>Metrics</h2>
<table><thead><tr><th>Metric</th><th>Base</th><th>Fine-tuned</th><th>Delta</th><th></th></tr></thead>
<tbody>{rows}</tbody></table>
<p class="muted">ROUGE uses a Unicode word tokenizer that keeps Hangul; BLEU signature
<code>{e(str(metrics['tuned'].get('bleu_signature')))}</code>.</p>
<h2>Loss</h2>
{loss_curve_svg(events)}
<h2>Run config</h2>
<pre>{e(config_yaml)}</pre>
<h2>Examples</h2>
<table><thead><tr><th>#</th><th>Prompt</th><th>Reference</th><th>Base</th><th>Fine-tuned</th>
<th>ROUGE-L base → tuned</th></tr></thead><tbody>{examples}</tbody></table>
</body></html>
"""


def write_reports(directory: Path, metrics: dict[str, Any], predictions: Sequence[dict[str, Any]],
                  config: dict[str, Any], events: Sequence[Event]) -> dict[str, Path]:
    paths = {"report_md": Path(directory) / "report.md", "report_html": Path(directory) / "report.html"}
    atomic.write_text(paths["report_md"], render_markdown(metrics, predictions, config, events))
    atomic.write_text(paths["report_html"], render_html(metrics, predictions, config, events))
    return paths
