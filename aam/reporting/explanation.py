"""``report.html`` of ``aam explain``, read from its output folder (``asv_importance.tsv``,
``deletion_check.tsv``, ``summary.json``, ``config.json``): the top ASVs labelled by taxon (by a short id
otherwise, the full sequence in the table), their direction and agreement across samples, and the deletion
check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from aam.data.taxonomy import feature_label
from aam.reporting import figures
from aam.reporting.page import ReportPage, standard_facts
from aam.reporting.style import LOWERS, RAISES, class_colour

HEADLINE_K = 5  # the deletion check quoted in the headline


def write_explanation_report(output_dir: str | Path) -> Path:
    """Write ``output_dir/report.html`` from a finished ``aam explain`` folder; return its path."""
    out = Path(output_dir)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    options = json.loads((out / "config.json").read_text(encoding="utf-8")).get("options", {})
    importance = pd.read_csv(out / "asv_importance.tsv", sep="\t", dtype={"feature_id": str, "taxon": str})
    deletion = pd.read_csv(out / "deletion_check.tsv", sep="\t")
    classes = [str(c) for c in summary.get("classes") or []]
    top = int(options.get("top_asvs") or 20)
    page = ReportPage(title="AAM explain: which ASVs the model relies on",
                      headline=_headline(importance, deletion, classes), facts=_facts(summary, options))
    shown = importance.head(top)
    labels = [feature_label(f, "" if pd.isna(t) else t) for f, t in
              zip(shown["feature_id"], shown.get("taxon", pd.Series([""] * len(shown))))]
    colours, legend = _directions(shown, classes)
    page.section(f"Top {len(shown)} ASVs", "Importance: the mean size of the change of the answer when the ASV is "
                                           "removed from a sample (0 where it is absent), over all explained samples."
                                           " Sign agreement: the share of samples holding the ASV in which its effect "
                                           "has its usual direction.")
    page.figure(figures.top_asvs(labels, shown["importance"].to_numpy(float),
                                 shown["sign_agreement"].to_numpy(float), colours, legend),
                caption="Labels: the deepest named rank of the taxon (with --taxonomy) and a short id: the feature id, "
                        "or the MD5 of the sequence (QIIME 2's feature id); the table below gives each in full.",
                alt="top ASVs by importance")
    page.table(_top_table(shown, classes).assign(label=[label.replace(" ", "\u00a0") for label in labels])
               .pipe(_label_first), caption="top ASVs (asv_importance.tsv holds every attributed ASV)",
               monospace=("sequence",))
    page.section("Deletion check", "Removing the ASVs the attribution ranks highest should move the answers more "
                                   "than removing as many random ones; if it does not, the attribution is not to be "
                                   "trusted.")
    page.figure(figures.deletion_check(deletion), caption="Mean change of the answers after removing each sample's "
                                                          "k top-attributed ASVs vs k random ASVs.",
                alt="deletion check")
    page.table(deletion, caption="deletion_check.tsv")
    for name, caption in (("categorical_effects.tsv", "effect of setting each metadata column to unknown"),
                          ("fusion.tsv", "fusion gate or attention per category")):
        if (out / name).is_file():
            page.section(caption[0].upper() + caption[1:])
            page.table(pd.read_csv(out / name, sep="\t"), caption=name, max_rows=40)
    if "importance_share_single_group" in summary:
        page.text(f"{100 * summary['importance_share_single_group']:.0f}% of the importance sits on ASVs found in one "
                  f"{summary.get('group_column')} only; above half, the model may recognise groups rather than a "
                  "signal that transfers to new ones.")
    return page.write(out / "report.html")


def _headline(importance: pd.DataFrame, deletion: pd.DataFrame, classes: list[str]) -> str:
    if not len(importance):
        return "No ASV was attributed."
    first = importance.iloc[0]
    taxon = first.get("taxon", "")
    label = feature_label(first["feature_id"], "" if pd.isna(taxon) else str(taxon))
    if classes:
        direction = f"most often raising {first['raises']}"
    else:
        direction = "raising the prediction" if first["direction"] == "+" else "lowering the prediction"
    text = (f"Of {len(importance)} ASVs attributed, the most important is {label}, {direction} "
            f"(in {100 * first['sign_agreement']:.0f}% of the samples holding it)")
    rows = deletion[(deletion["k"] == HEADLINE_K)] if len(deletion) else deletion
    if len(rows):
        row = rows.iloc[0]
        text += (f"; removing each sample's {HEADLINE_K} top-attributed ASVs changed the answers by "
                 f"{row['top']:.3g} against {row['random']:.3g} for {HEADLINE_K} random ones")
    return text + "."


def _facts(summary: dict[str, Any], options: dict[str, Any]) -> list[tuple[str, str]]:
    facts = standard_facts("explain", {("model" if k == "model_paths" else k): v for k, v in options.items()})
    models = summary.get("models") or []
    facts.insert(1, ("data", f"table {options.get('table')}; model{'s' if len(models) > 1 else ''} "
                             + ", ".join(map(str, models))
                             + (f"; taxonomy {options['taxonomy']}" if options.get("taxonomy") else "")))
    facts.insert(2, ("samples", f"{summary.get('n_samples')} explained ({summary.get('task')}), method "
                                f"{summary.get('method')}"))
    if options.get("group_column"):
        facts.insert(3, ("groups", f"{options['group_column']!r}"))
    return facts


def _directions(shown: pd.DataFrame, classes: list[str]) -> tuple[list[str], dict[str, str]]:
    """Bar colours and their legend: the class an ASV raises (classifiers) or the sign of its effect."""
    if classes:
        palette = {label: class_colour(k) for k, label in enumerate(classes)}
        colours = [palette[str(k)] for k in shown["raises"]]
        return colours, {f"raises {k}": palette[k] for k in classes if k in set(map(str, shown["raises"]))}
    colours = [RAISES if d == "+" else LOWERS for d in shown["direction"]]
    legend = {}
    if (shown["direction"] == "+").any():
        legend["raises the prediction"] = RAISES
    if (shown["direction"] == "-").any():
        legend["lowers the prediction"] = LOWERS
    return colours, legend


def _top_table(shown: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    keep = ["rank", "taxon", "feature_id", "importance"]
    keep += [f"effect_{c}" for c in classes] + ["raises"] if classes else ["effect", "direction"]
    keep += ["sign_agreement", "n_samples", "n_groups", "mean_relative_abundance", "sequence"]
    table = shown[[c for c in keep if c in shown.columns]].copy()
    if "sequence" in table and "feature_id" in table and (table["sequence"] == table["feature_id"]).all():
        table = table.drop(columns=["feature_id"])  # the id is the sequence: shown once
    return table


def _label_first(table: pd.DataFrame) -> pd.DataFrame:
    """The figure's label as the second column, so each bar is found in the table."""
    return table[["rank", "label"] + [c for c in table.columns if c not in ("rank", "label")]]
