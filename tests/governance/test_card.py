"""render_card: Markdown and self-contained HTML for full, minimal and hostile records."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd

from pipeflow.governance import bias_metrics, data_summary, render_card

EVIL = "<script>alert(1)</script>"


def full_record() -> dict:
    frame = pd.DataFrame(
        {
            "amount": [120.0, 80.5, np.nan, 3000.0, 15.0, 42.0],
            "region": ["north", "south", "north", None, "south", "north"],
            "category": ["fire", "theft", "fire", EVIL, "theft", "fire"],
        }
    )
    y_true = ["fire", "theft", "fire", EVIL, "theft", "fire"]
    y_pred = ["fire", "theft", "theft", EVIL, "fire", "fire"]
    return {
        "name": "claims-categoriser",
        "version": 3,
        "created": 1764000000.0,
        "user": "alice",
        "host": "build-7",
        "description": "Routes claims to the right team.",
        "intended_use": f"Triage only | never {EVIL} for payouts",
        "model": {"digest": "ab" * 32, "codec": "skops", "kind": "model", "size": 12345},
        "estimator": "sklearn.linear_model.LogisticRegression",
        "task": "classification",
        "target": "category",
        "signature": {
            "features": [
                {"name": "amount", "dtype": "float64"},
                {"name": "region", "dtype": "object"},
            ],
            "classes": ["fire", "theft", EVIL],
        },
        "params": {"C": 5.0, "max_iter": 2000, "class_weight": {"fire": 2}},
        "metrics": {
            "task": "classification",
            "rows": 1500,
            "accuracy": 0.961,
            "balanced_accuracy": 0.95,
            "f1_macro": 0.94,
            "per_class": {
                "fire": {"precision": 0.97, "recall": 0.96, "f1": 0.965, "support": 700},
                "theft": {"precision": 0.93, "recall": 0.92, "f1": 0.925, "support": 500},
            },
            "confusion_matrix": {"labels": ["fire", "theft"], "matrix": [[672, 28], [40, 460]]},
            "calibration": {"ece": 0.021, "bins": []},
            "slices": {
                "region": {
                    "north": {"rows": 300, "accuracy": 0.95, "f1_macro": 0.93},
                    "a|b\nc": {"rows": 20, "accuracy": 0.81, "f1_macro": 0.8},
                }
            },
        },
        "data": {
            "train": "1" * 64,
            "evaluation": "2" * 64,
            "rows_train": 4500,
            "rows_evaluation": 1500,
        },
        "data_summary": data_summary(frame, "category"),
        "bias": bias_metrics(y_true, y_pred, frame["region"], attribute="region"),
        "bias_limits": {"demographic_parity_difference": 0.1, "equalized_odds_difference": 2.0},
        "importance": {
            "method": "permutation",
            "scoring": "accuracy",
            "rows": 1500,
            "n_repeats": 5,
            "features": [
                {"name": "description", "mean": 0.41, "std": 0.01},
                {"name": "amount", "mean": 0.05, "std": 0.004},
                {"name": "region", "mean": -0.001, "std": 0.002},
            ],
            "contributions": {
                "method": "xgboost pred_contribs (mean |SHAP| per model feature)",
                "features": [{"name": "text_description__smoke flames", "mean_abs": 1.25}],
            },
        },
        "gates": [
            {
                "kind": "threshold",
                "gate": "accuracy >= 0.94",
                "metric": "accuracy",
                "op": ">=",
                "threshold": 0.94,
                "value": 0.961,
                "passed": True,
                "detail": None,
            },
            {
                "kind": "champion",
                "gate": "accuracy >= champion",
                "metric": "accuracy",
                "op": ">=",
                "threshold": 0.97,
                "value": 0.961,
                "passed": False,
                "detail": "claims-categoriser@2 scores 0.97",
            },
        ],
        "run": {
            "run_id": "20261125-101010-abcd",
            "pipeline": "claims",
            "stage": "promote",
            "model_digest": "9" * 64,
        },
    }


# the shape pipeflow.registry.lineage.model_lineage returns
LINEAGE = {
    "model": "claims-categoriser@3",
    "model_digest": "9" * 64,
    "run_id": "20261125-101010-abcd",
    "pipeline": "claims",
    "stage": "promote",
    "training_table": "1" * 64,
    "evaluation_table": "2" * 64,
    "stages": [
        {"stage": "raw", "type": "ingest", "state": "done", "inputs": [], "outputs": ["d" * 64]},
        {
            "stage": "split",
            "type": "split",
            "state": "cached",
            "inputs": ["raw"],
            "outputs": ["1" * 64, "2" * 64],
        },
        {
            "stage": "model",
            "type": "train",
            "state": "done",
            "inputs": ["split"],
            "outputs": ["e" * 64],
        },
        {
            "stage": "promote",
            "type": "promote",
            "state": "done",
            "inputs": ["model", "split"],
            "outputs": [],
        },
    ],
    "sources": [
        {
            "stage": "raw",
            "type": "ingest",
            "source": "data/claims.csv",
            "fingerprint": "f" * 64,
            "digest": "d" * 64,
        }
    ],
    "shared_with": [
        {"model": "claims-categoriser@2", "digests": ["d" * 64]},
        {"model": "fraud@1", "digests": ["1" * 64, "d" * 64]},
    ],
}


class _Checked(HTMLParser):
    """Collects tags and text; html.parser raises nothing, so structure is checked by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(html: bytes) -> _Checked:
    parser = _Checked()
    parser.feed(html.decode())
    parser.close()
    return parser


def test_full_card_has_every_section_with_its_values():
    markdown, html = render_card(full_record(), LINEAGE)
    for heading in (
        "# Model card: claims-categoriser@3",
        "## Intended use",
        "## Data",
        "## Metrics",
        "### By region",
        "## Bias",
        "## Feature importance",
        "## Gates",
        "## Lineage",
        "## Signature",
        "## Params",
    ):
        assert heading in markdown, heading
    assert "2025-11-24 16:00:00 UTC" in markdown
    assert "alice on build-7" in markdown
    assert "sklearn.linear_model.LogisticRegression" in markdown
    assert "1" * 13 not in markdown  # digests cut to 12 characters
    assert "| train | 111111111111 | 4500 |" in markdown
    assert "| accuracy | 0.961 |" in markdown
    assert "| north | 300 | 0.95 | 0.93 |" in markdown
    assert "| demographic_parity_difference |" in markdown
    assert "| demographic_parity_difference | 1 | 0.1 | FAILED |" in markdown
    assert "| equalized_odds_difference | 0.5 | 2 | passed |" in markdown
    assert "Bias check FAILED" in markdown
    assert "text_description__smoke flames" in markdown
    assert (
        "| champion | accuracy >= champion | FAILED | claims-categoriser@2 scores 0.97 | 0.961 | 0.97 |"
        in markdown
    )
    assert "1 of 2 gate(s) FAILED." in markdown
    assert "ffffffffffff" in markdown and "data/claims.csv" in markdown
    assert "claims-categoriser@2" in markdown
    assert '| class_weight | {"fire": 2} |' in markdown
    assert "not recorded" not in markdown.split("## Lineage")[1]

    parsed = parse(html)
    assert parsed.tags.count("h2") >= 9
    assert "table" in parsed.tags and "svg" in parsed.tags
    text = "".join(parsed.text)
    assert "claims-categoriser@3" in text and "0.961" in text and "ffffffffffff" in text


def test_data_values_are_escaped_in_html_and_markdown():
    markdown, html = render_card(full_record(), LINEAGE)
    page = html.decode()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert EVIL in "".join(parse(html).text)  # shown as text, never run
    assert "<script" not in markdown.replace("\\<", "")
    assert "\\<script>alert(1)\\</script>" in markdown
    assert "&lt;" not in markdown  # an entity would show as is in a Markdown file


def test_markdown_table_cells_escape_pipes_and_newlines():
    markdown, _ = render_card(full_record(), LINEAGE)
    slices = markdown.split("### By region")[1].split("##")[0]
    assert "| a\\|b c | 20 | 0.81 | 0.8 |" in slices
    for line in slices.strip().splitlines():
        assert line.replace("\\|", "").count("|") == 5  # four cells on one line each


def test_minimal_record_renders_every_section_as_not_recorded():
    markdown, html = render_card({"name": "m", "version": 1})
    assert markdown.startswith("# Model card: m@1\n")
    for heading in ("## Intended use", "## Data", "## Metrics", "## Bias", "## Gates"):
        assert heading in markdown
    section = markdown.split("## Bias")[1].split("##")[0]
    assert "not recorded" in section
    assert "this section could not be drawn" not in markdown
    parsed = parse(html)
    assert "h1" in parsed.tags
    assert "<script" not in html.decode().lower()


def test_odd_shapes_do_not_break_the_card():
    record = {
        "name": "m",
        "version": 2,
        "created": "yesterday",
        "metrics": {"task": "regression", "rows": 10, "r2": 0.5, "slices": {"x": {}}},
        "bias": {"groups": {"a": {"rows": 3}}, "classes": ["y"]},
        "bias_limits": {"demographic_parity_difference": 0.2},
        "importance": {"features": [{"name": "x"}], "contributions": {"error": "boom"}},
        "gates": [{"metric": "r2", "op": ">=", "threshold": 0.4}],
        "signature": {"classes": []},
        "params": None,
    }
    markdown, html = render_card(record, {"sources": None})
    assert "this section could not be drawn" not in markdown
    assert "| r2 | 0.5 |" in markdown
    assert "Could not be computed: boom" in markdown
    assert "| demographic_parity_difference | not recorded | 0.2 | FAILED |" in markdown
    assert "| — | r2 >= 0.4 |" not in markdown  # the gate text is rebuilt from its parts
    assert "r2 >= 0.4" in markdown
    parse(html)


def test_values_of_the_wrong_shape_are_skipped_not_fatal():
    record = {
        "name": "m",
        "version": 1,
        "metrics": [1],
        "bias": "x",
        "gates": "x",
        "signature": {"features": "ab", "classes": 3},
        "importance": {"features": 3},
        "data_summary": {"columns": "x", "target": 5},
    }
    markdown, html = render_card(record, {"sources": "x", "shared_with": None})
    assert "this section could not be drawn" not in markdown
    assert "Shares data with: no other version." in markdown
    parse(html)


def test_a_confusion_matrix_of_text_is_left_out_not_written_raw():
    record = full_record()
    record["metrics"]["confusion_matrix"] = {"labels": ["a"], "matrix": [[EVIL]]}
    markdown, html = render_card(record)
    assert "<script" not in html.decode().lower()
    assert "### Confusion matrix" not in markdown
    assert "## Metrics" in markdown and "this section could not be drawn" not in markdown


def test_lineage_section_draws_the_lineage_model_lineage_returns():
    markdown, html = render_card(full_record(), LINEAGE)
    section = markdown.split("## Lineage")[1].split("\n## ")[0]
    assert "| run | 20261125-101010-abcd |" in section
    assert "| registered by stage | promote |" in section
    assert "spec" not in section  # not recorded by runs: no row rather than "not recorded"
    assert "| stage | type | state | inputs | outputs |" in section
    assert "| raw | ingest | done | — | dddddddddddd |" in section
    assert "| split | split | cached | raw | 111111111111, 222222222222 |" in section
    assert "| promote | promote | done | model, split | — |" in section
    assert (
        "Shares data with: claims-categoriser@2 (dddddddddddd); "
        "fraud@1 (111111111111, dddddddddddd)." in section
    )
    assert "Same model artifact" not in markdown and "{'model'" not in markdown
    text = "".join(parse(html).text)
    assert "Shares data with: claims-categoriser@2" in text and "model, split" in text


def test_lineage_spec_and_note_are_shown_when_present():
    record = full_record()
    record["run"]["spec_path"] = "/x/pipeline.yaml"
    note = "run r1 is not in the metadata database db.sqlite: only what the version record holds is shown"
    markdown, _ = render_card(record, {**LINEAGE, "stages": [], "sources": [], "note": note})
    section = markdown.split("## Lineage")[1]
    assert "| spec | /x/pipeline.yaml |" in section
    assert note in section


def test_gate_comparisons_keep_a_readable_less_than_in_markdown():
    record = full_record()
    record["gates"] = [
        {"kind": "bias", "gate": "accuracy_difference <= 0.1", "passed": True, "value": 0.05}
    ]
    markdown, html = render_card(record)
    assert "| bias | accuracy_difference \\<= 0.1 | passed |" in markdown
    assert "accuracy_difference <= 0.1" in "".join(parse(html).text)


def test_card_of_a_real_model_lineage():
    """model_lineage's output, from a metadata database and registry, feeds the card as is."""
    from pipeflow.registry.lineage import model_lineage

    class Db:
        path = "meta.sqlite"

        def find_run(self, run_id):
            return {"id": run_id}

        def lineage(self, run_id):
            return [
                {"src_stage": "raw", "dst_stage": "model", "dst_port": "data", "digest": "d" * 64},
                {
                    "src_stage": "model",
                    "dst_stage": "promote",
                    "dst_port": "model",
                    "digest": "e" * 64,
                },
            ]

        def stage_runs(self, run_id):
            return [
                {
                    "stage": "raw",
                    "type": "ingest",
                    "state": "done",
                    "config": '{"path": "data.csv"}',
                    "code_digest": "f" * 64,
                },
                {
                    "stage": "model",
                    "type": "train",
                    "state": "done",
                    "config": "{}",
                    "code_digest": "c" * 64,
                },
                {
                    "stage": "promote",
                    "type": "promote",
                    "state": "done",
                    "config": "{}",
                    "code_digest": "a" * 64,
                },
            ]

    def version(n):
        return {
            "name": "m",
            "version": n,
            "model": {"digest": str(n) * 64},
            "data": {"train": "t" * 64},
            "run": {"run_id": f"run{n}", "pipeline": "p", "stage": "promote"},
        }

    class Registry:
        def models(self):
            return ["m"]

        def versions(self, name):
            return [version(1), version(2)]

    lineage = model_lineage(Db(), Registry(), version(2))
    markdown, _ = render_card(version(2), lineage)
    section = markdown.split("## Lineage")[1]
    assert "| raw | ingest | data.csv | ffffffffffff | dddddddddddd |" in section
    assert "| model | train | done | raw | eeeeeeeeeeee |" in section
    assert "Shares data with: m@1 (dddddddddddd, tttttttttttt)." in section
