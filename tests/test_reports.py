"""``report.html`` of cross-validate, train and explain: one self-contained page (every figure embedded and
decodable, no script, no external URL), figures whose printed scores agree with the run's tables, the same
colour for the same method everywhere, and the labelling rules (positive class, ASV labels)."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from aam.cli import cli
from aam.data.taxonomy import feature_label
from aam.reporting.figures import positive_class
from aam.reporting.style import METHOD_COLOURS, method_colour

FAST = ["--rf-n-estimators", "20", "--rf-n-jobs", "1", "--seed", "2", "--quiet"]
TINY = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "24",
        "--max-bp", "150", "--batch-size", "8", "--seed", "3", "--device", "cpu", "--quiet"]


def run_ok(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


class PageParts(HTMLParser):
    """Every tag, attribute and text chunk of a page, and the decoded images."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.images: list[tuple[str, bytes]] = []  # (mime type, decoded bytes)
        self.text: list[str] = []
        self.figure_ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        values = dict(attrs)
        self.attributes += [(k, v or "") for k, v in attrs]
        if tag == "img":
            match = re.fullmatch(r"data:(image/(?:svg\+xml|png));base64,([A-Za-z0-9+/=]+)", values.get("src", ""))
            assert match, f"an image not embedded as data: {values.get('src', '')[:60]}"
            self.images.append((match.group(1), base64.b64decode(match.group(2), validate=True)))
            assert values.get("alt"), "every figure has alt text"
        if tag == "figure":
            self.figure_ids.append(values["id"])

    def handle_data(self, data):
        self.text.append(data)


def parse_report(path: Path) -> PageParts:
    text = path.read_text(encoding="utf-8")
    parts = PageParts()
    parts.feed(text)
    assert text.startswith("<!DOCTYPE html>")
    assert not {"script", "link", "iframe", "object", "embed"} & set(parts.tags)
    for name, value in parts.attributes:  # nothing fetched from anywhere: only data: URIs and in-page links
        assert not re.match(r"\s*(https?:|//|file:|ftp:)", value), (name, value[:80])
    assert len(parts.images) == len(parts.figure_ids) >= 1
    assert parts.figure_ids == [f"figure-{k + 1}" for k in range(len(parts.figure_ids))]
    for mime, data in parts.images:
        if mime == "image/png":
            assert data.startswith(b"\x89PNG")
        else:
            svg = data.decode("utf-8")
            assert "<svg" in svg and "</svg>" in svg
            # the only URLs an embedded SVG may hold are its XML namespaces and its own rasterised data
            hrefs = re.findall(r'(?:xlink:)?href="([^"]*)"', svg)
            assert all(h.startswith(("data:image/png;base64,", "#")) for h in hrefs), hrefs[:3]
    return parts


def svg_texts(parts: PageParts) -> list[str]:
    return [data.decode("utf-8") for mime, data in parts.images if mime == "image/svg+xml"]


@pytest.fixture(scope="module")
def cohort(synthetic_dir, tmp_path_factory):
    """The synthetic table with 12 subjects of 4 samples and a binary ``status`` constant within a subject."""
    frame = pd.read_csv(synthetic_dir["metadata"], sep="\t", dtype={"sample_id": str})
    frame["subject"] = [f"P{i // 4:02d}" for i in range(len(frame))]
    subject_mean = frame.groupby("subject")["target"].transform("mean")
    frame["status"] = np.where(subject_mean > subject_mean.median(), "case", "control")
    path = tmp_path_factory.mktemp("report_data") / "metadata.tsv"
    frame.to_csv(path, sep="\t", index=False)
    return {"table": synthetic_dir["table"], "metadata": path}


@pytest.fixture(scope="module")
def classification_cv(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("report_cv") / "status"
    run_ok("cross-validate", "--table", cohort["table"], "--metadata", cohort["metadata"], "--metadata-column",
           "status", "--classifier", "--group-column", "subject", "--n-folds", 3, "--model-type", "sequence-groups",
           "--sequence-groups", "4,8", "--output-dir", out, *FAST)
    return out


def test_cross_validation_report_shows_every_method_with_its_scores(classification_cv):
    parts = parse_report(classification_cv / "report.html")
    text = " ".join(parts.text)
    summary = json.loads((classification_cv / "summary.json").read_text())
    methods = ["aam", "forest", "clr-linear", "boosted", "blend"]
    assert [m for m in methods if m in summary] == methods
    assert f"the best classical baseline, {summary['best_baseline']}" in text
    assert "12 groups of 'subject'" in text and "aam cross-validate" in text
    svgs = svg_texts(parts)
    roc = next(s for s in svgs if "false positive rate" in s)
    comparison = pd.read_csv(classification_cv / "comparison.tsv", sep="\t").set_index("fold")
    for method in methods:  # the legend's pooled AUROC is the table's pooled AUROC
        assert f"{method}: AUROC {comparison.loc['pooled', f'{method}_auroc']:.3f}" in roc
    assert "recall (of case)" in roc  # 'control' is named a control: 'case' is the positive class
    for needle in ("per fold", "predicted class", "mean out-of-fold probability of case"):
        figure = next(s for s in svgs if needle in s)  # per-fold dots, confusion matrices, per-group calls
        assert METHOD_COLOURS["aam"].lower() in figure.lower() or METHOD_COLOURS["aam"] in figure
    group_table = [t for t in parts.text if t.startswith("P")]
    assert {f"P{i:02d}" for i in range(12)} <= set(group_table)


def test_regression_cross_validation_report_and_no_report(cohort, tmp_path):
    out = tmp_path / "target"
    run_ok("cross-validate", "--table", cohort["table"], "--metadata", cohort["metadata"], "--metadata-column",
           "target", "--group-column", "subject", "--n-folds", 3, "--model-type", "sequence-groups",
           "--sequence-groups", "4,8", "--baselines", "forest,clr-linear", "--output-dir", out, *FAST)
    parts = parse_report(out / "report.html")
    svgs = svg_texts(parts)
    oof = pd.read_csv(out / "oof_predictions.tsv", sep="\t")
    scatter = next(s for s in svgs if "actual (target)" in s)
    for method in ("aam", "forest", "clr-linear", "blend"):
        mae = np.mean(np.abs(oof[f"{method}_prediction"] - oof["actual"]))
        assert f"{method}: MAE {mae:.3g}" in scatter
    assert any("mean absolute error of the group" in s for s in svgs)
    quiet = tmp_path / "quiet"
    run_ok("cross-validate", "--table", cohort["table"], "--metadata", cohort["metadata"], "--metadata-column",
           "target", "--n-folds", 2, "--model-type", "sequence-groups", "--sequence-groups", "4,8", "--baselines",
           "forest", "--no-report", "--output-dir", quiet, *FAST)
    assert (quiet / "summary.json").is_file() and not (quiet / "report.html").exists()


def test_training_reports(cohort, tmp_path):
    out = tmp_path / "transformer"
    run_ok("train", "--table", cohort["table"], "--metadata", cohort["metadata"], "--metadata-column", "status",
           "--classifier", "--group-column", "subject", "--epochs", 3, "--output-dir", out, *TINY)
    parts = parse_report(out / "report.html")
    text = " ".join(parts.text)
    assert "AAM model card" in text and "Best epoch" in text
    svgs = svg_texts(parts)
    assert any("validation AUROC" in s for s in svgs) and any("true class" in s for s in svgs)
    assert any("best epoch" in s for s in svgs)
    groups = tmp_path / "groups"
    run_ok("train", "--table", cohort["table"], "--metadata", cohort["metadata"], "--metadata-column", "target",
           "--model-type", "sequence-groups", "--sequence-groups", "4,8", "--output-dir", groups, "--quiet")
    parts = parse_report(groups / "report.html")
    text = " ".join(parts.text)
    assert "The inner cross-validation" in text and "alpha" in text and "sequence-groups" in text


def test_explain_report_labels_asvs_by_taxon(cohort, tmp_path):
    run = tmp_path / "model"
    run_ok("train", "--table", cohort["table"], "--metadata", cohort["metadata"], "--metadata-column", "target",
           "--model-type", "sequence-groups", "--sequence-groups", "4,8", "--output-dir", run, "--quiet")
    from aam.data.biom_table import load_table

    asvs = [str(a) for a in load_table(str(cohort["table"])).ids(axis="observation")]
    taxonomy = tmp_path / "taxonomy.tsv"
    pd.DataFrame({"Feature ID": asvs, "Taxon": [f"k__Bacteria; g__Genus{i}" for i in range(len(asvs))]}).to_csv(
        taxonomy, sep="\t", index=False)
    out = tmp_path / "explained"
    run_ok("explain", "--model", run / "checkpoints" / "best_model.pt", "--table", cohort["table"], "--taxonomy",
           taxonomy, "--top-asvs", 8, "--output-dir", out, "--device", "cpu", "--quiet")
    parts = parse_report(out / "report.html")
    importance = pd.read_csv(out / "asv_importance.tsv", sep="\t")
    bars = next(s for s in svg_texts(parts) if "sign agreement" in s)
    for feature, taxon in zip(importance["feature_id"].head(8), importance["taxon"].head(8)):
        assert feature_label(feature, taxon) in bars  # labelled by taxon and a short id
        assert feature in parts.text  # the whole sequence, in the table
    assert any("random ASVs removed" in s for s in svg_texts(parts))
    assert "most important is " + feature_label(importance["feature_id"][0], importance["taxon"][0]) in " ".join(
        parts.text)


def test_labelling_rules():
    assert positive_class(["case", "control"], np.array(["case", "control", "control"])) == "case"
    assert positive_class(["CD", "healthy"], np.array(["healthy"] * 5 + ["CD"] * 9)) == "CD"
    assert positive_class(["a", "b"], np.array(["a", "a", "b"])) == "b"  # no control name: the rarer class
    assert positive_class(["a", "b"], np.array(["a", "b"])) == "a"
    sequence = "ACGT" * 30
    assert feature_label(sequence) == "md5 " + __import__("hashlib").md5(sequence.encode()).hexdigest()[:8]
    assert feature_label("ASV_1", "k__B; g__Blautia; s__") == "g__Blautia (ASV_1)"
    assert feature_label("0123456789abcdef0123") == "0123456789…"
    assert method_colour("aam") == METHOD_COLOURS["aam"] and method_colour("x") == method_colour("x")
    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)


def test_groups_of_mixed_classes_get_their_share_called_right(cohort, tmp_path):
    out = tmp_path / "label"
    run_ok("cross-validate", "--table", cohort["table"], "--metadata", cohort["metadata"], "--metadata-column",
           "label", "--classifier", "--group-column", "subject", "--n-folds", 2, "--model-type", "sequence-groups",
           "--sequence-groups", "4,8", "--baselines", "forest", "--output-dir", out, *FAST)
    parts = parse_report(out / "report.html")
    oof = pd.read_csv(out / "oof_predictions.tsv", sep="\t", dtype={"group": str})
    assert (oof.groupby("group")["actual"].nunique() > 1).any()  # the subjects hold several classes
    assert any("share of the group's samples called right" in s for s in svg_texts(parts))
    right = (oof["aam_prediction"].astype(str) == oof["actual"].astype(str)).groupby(oof["group"]).mean()
    cells = [t for t in parts.text if t.strip()]
    worst = right.sort_values(kind="stable").index[0]
    assert worst in cells and cells.index(worst) < cells.index(right.sort_values().index[-1])  # worst listed first


def test_folds_of_one_class_are_judged_on_pooled_scores(cohort, tmp_path):
    """Folds of whole people holding one class each (as leave-one-person-out folds of a per-person label are):
    no fold has an AUROC, so the best baseline and the report's sentence use the pooled scores, not NaN."""
    frame = pd.read_csv(cohort["metadata"], sep="\t", dtype={"sample_id": str})
    subjects = frame.drop_duplicates("subject")  # 4 folds of whole people, each holding one class
    fold_of = {s: f"{status}{k % 2}" for k, (s, status) in enumerate(zip(subjects["subject"], subjects["status"]))}
    folds = tmp_path / "folds.tsv"
    frame.assign(fold=frame["subject"].map(fold_of))[["sample_id", "fold"]].to_csv(folds, sep="\t", index=False)
    out = tmp_path / "one_class_folds"
    run_ok("cross-validate", "--table", cohort["table"], "--metadata", cohort["metadata"], "--metadata-column",
           "status", "--classifier", "--group-column", "subject", "--folds", folds, "--model-type",
           "sequence-groups", "--sequence-groups", "4,8", "--baselines", "forest,clr-linear", "--output-dir", out,
           *FAST)
    summary = json.loads((out / "summary.json").read_text())
    assert np.isnan(summary["forest"]["fold_mean"]["auroc"])
    assert summary["scored_on"] == "pooled"
    pooled = {name: summary[name]["pooled"]["auroc"] for name in ("forest", "clr-linear")}
    assert summary["best_baseline"] == max(pooled, key=pooled.get)
    headline = next(t for t in parse_report(out / "report.html").text if t.startswith("Over "))
    assert "nan" not in headline and f"AUROC {summary['aam']['pooled']['auroc']:.3f} (pooled)" in headline
