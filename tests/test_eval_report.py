"""The comparison report: metrics with deltas, loss curves, config and examples; escaping; no external assets."""

from workbench.core.events import parse_event
from workbench.core.report import loss_curve_svg, metric_table, render_html, render_markdown, sparkline

METRICS = {
    "run_id": "run-1", "model": "smollm2-135m", "method": "lora", "split": "test", "num_examples": 1,
    "data_file": "/data/test.jsonl", "generation": {"max_new_tokens": 64, "do_sample": False},
    "base": {"perplexity": 20.0, "rouge1": 0.1, "rouge2": 0.0, "rougeL": 0.1, "bleu": 1.0, "chrf": 10.0,
             "exact_match": 0.0, "bleu_signature": "nrefs:1|tok:char"},
    "tuned": {"perplexity": 8.0, "rouge1": 0.5, "rouge2": 0.3, "rougeL": 0.45, "bleu": 12.5, "chrf": 40.0,
              "exact_match": 0.0, "bleu_signature": "nrefs:1|tok:char"},
    "delta": {"perplexity": -12.0, "rouge1": 0.4, "rouge2": 0.3, "rougeL": 0.35, "bleu": 11.5, "chrf": 30.0,
              "exact_match": 0.0},
}
PREDICTIONS = [{"index": 0, "prompt": "세금 | 기한 <script>alert(1)</script>", "reference": "25일\n이내",
                "base": "모름", "tuned": "25일 이내", "base_scores": {"rougeL": 0.0}, "tuned_scores": {"rougeL": 1.0}}]
EVENTS = [parse_event(raw) for raw in [{"type": "step", "step": s, "loss": l} for s, l in ((1, 3.0), (2, 2.0), (3, 1.5))]
          + [{"type": "eval", "step": 3, "eval_loss": 1.8}]]
CONFIG = {"lora": {"r": 16, "target_modules": ["q_proj", "v_proj"]}}


def test_metric_table_knows_lower_perplexity_is_better():
    rows = {r["key"]: r for r in metric_table(METRICS)}
    assert rows["perplexity"]["verdict"] == "better" and rows["perplexity"]["delta"] == "-12.000"
    assert rows["bleu"]["delta"] == "+11.50" and rows["bleu"]["verdict"] == "better"
    assert rows["exact_match"]["verdict"] == "same"


def test_markdown_has_metrics_loss_config_and_escaped_examples():
    text = render_markdown(METRICS, PREDICTIONS, CONFIG, EVENTS)
    assert "| Perplexity (answer tokens) | 20.000 | 8.000 | -12.000 | better |" in text
    assert "| ROUGE-L F1 | 0.1000 | 0.4500 | +0.3500 | better |" in text
    assert "train loss: 3.0000 at step 1 → 1.5000 at step 3" in text and "eval loss: 1.8000" in text
    assert "target_modules:\n  - q_proj" in text
    assert "세금 \\| 기한" in text and "25일<br>이내" in text  # a pipe or newline cannot break the table


def test_html_is_self_contained_escaped_and_draws_both_curves():
    page = render_html(METRICS, PREDICTIONS, CONFIG, EVENTS)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<polyline") == 1 and page.count("<circle") == 1  # train line, single eval point
    assert "src=" not in page and "href=" not in page and "@import" not in page
    assert "12.50" in page and "25일 이내" in page and "r: 16" in page


def test_loss_curve_without_events_and_sparkline():
    assert "No loss" in loss_curve_svg([])
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert len(sparkline(list(range(100)), width=40)) == 40
