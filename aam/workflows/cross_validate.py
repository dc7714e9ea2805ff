"""``aam cross-validate``: an ``aam train`` recipe and classical baselines, cross-validated on the same folds.

Layout of ``--output-dir``::

    folds.tsv                      sample_id, fold (and group): the outer folds, fixed at the first run
    folds/<fold>/test_samples.txt  the fold's held-out samples (never trained on, never used to stop early)
    folds/<fold>/model[_s<seed>]/  the aam train run(s) of the fold (inner split honours --group-column)
    folds/<fold>/predictions.tsv   the fold's out-of-fold AAM predictions (written last: the fold is done)
    <baseline>/                    aam rf-baseline --baseline <baseline> over folds.tsv, for each of --baselines
                                   (forest/, clr-linear/, boosted/: predictions, per-fold and per-group metrics)
    oof_predictions.tsv            every sample's prediction by AAM, each baseline and ``blend``: every AAM
                                   recipe (the recipe and each --variant) and every baseline, equal weights
    comparison.tsv                 per fold: every method's scores, who won between AAM and each baseline
                                   (winner_vs_<baseline>) and against the best one (winner); pooled/mean/sd rows
    groups.tsv                     per group (with --group-column): both methods' scores
    summary.json                   pooled and per-fold means; with --group-column also ``by_group``: each group's
                                   mean prediction scored as one call (a person-level AUROC)
    plots/cross_validation.png, cross_validate.log
    report.html                    one page that opens offline: scores, curves, confusion matrices, per-group calls

A rerun of the same command skips finished folds and resumes an interrupted fold from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aam.data.biom_table import load_table
from aam.data.metadata import align_samples, read_metadata, require_column
from aam.data.split import make_folds, read_ids, write_ids
from aam.errors import AamError
from aam.fileio import write_json, write_tsv
from aam.models.config import TREE_READOUTS
from aam.objectives.metrics import metric_direction
from aam.objectives.scoring import (
    group_means,
    probability_columns,
    score_predictions,
    scores_by,
    typed_predictions,
)
from aam.training.preemption import RunInterrupted
from aam.training.runtime import configure_logging
from aam.workflows.forest_blend import FOREST_FILE, blend_many
from aam.workflows.run_config import (
    CrossValidateRun,
    PredictRun,
    PretrainRun,
    RfBaselineRun,
    TrainRun,
    defaults,
)
from aam.workflows.samples import sample_groups

log = logging.getLogger("aam")

PRIMARY_METRIC = {False: "mae", True: "auroc"}  # how folds are won: regression, classification


def run_cross_validate(run: CrossValidateRun) -> dict[str, Any]:
    """Cross-validate the ``aam train`` recipe of ``run`` and the forest; returns the summary."""
    members = _member_runs(run)
    out = Path(run.output_dir)
    configure_logging(None, run.verbose)
    seed = _run_seed(run, out)
    classifier = run.classifier
    ids, metadata, column = _usable_samples(run)
    group_column = (run.group_column or "").strip() or None
    folds, fold_table = _folds(run, out, ids, metadata, column, seed)
    chosen = _chosen_folds(run, folds)
    out.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves nothing behind
    configure_logging(out / "cross_validate.log", run.verbose)
    if fold_table is not None:
        write_tsv(out / "folds.tsv", fold_table)
    n_done = sum((out / "folds" / name / "predictions.tsv").is_file() for name in folds)
    if n_done:
        log.info("resuming: %d of %d folds are finished", n_done, len(folds))
    write_json(out / "cv_config.json", {"command": "cross-validate", "seed": seed, "n_samples": len(ids),
                                        "folds": {k: len(v) for k, v in folds.items()},
                                        "members": [{"name": m[0], "seed_offset": m[1], "options": m[2]}
                                                    for m in members],
                                        "options": {k: v for k, v in run.options().items() if k != "variants"}})
    baselines = {name: _run_baseline(run, out, name, column, group_column, seed) for name in run.baseline_names}
    configure_logging(out / "cross_validate.log", run.verbose)
    in_folds = {s for test in folds.values() for s in test}
    outside = [s for s in ids if s not in in_folds]  # in no fold: never trained on either
    for k, name in enumerate(folds):
        if name in chosen:
            _run_fold(run, out, name, folds[name] + outside, folds[name], metadata, column, seed, members,
                      f"fold {k + 1}/{len(folds)} ({name})")
    finished = {name: out / "folds" / name / "predictions.tsv" for name in folds}
    finished = {name: path for name, path in finished.items() if path.is_file()}
    if len(finished) < len(folds):
        log.info("%d of %d folds are finished; the summary covers those (run the others, e.g. with --only-folds, "
                 "into the same --output-dir)", len(finished), len(folds))
    aam = pd.concat([_read_predictions(path) for path in finished.values()], ignore_index=True)
    baselines = {name: frame[frame["fold"].isin(list(finished))] for name, frame in baselines.items()}
    summary = _summarise(out, aam, baselines, metadata, group_column, classifier, column,
                         recipes=1 + len(run.variants))
    if run.report:
        from aam.reporting.cross_validation import write_cross_validation_report

        log.info("report: %s", write_cross_validation_report(out, vars(defaults(CrossValidateRun))))
    return summary


def _run_seed(run: CrossValidateRun, out: Path) -> int:
    """``--seed``, else the seed of the run being resumed in ``out``, else a fresh one (recorded)."""
    if run.seed is not None:
        return int(run.seed)
    previous = out / "cv_config.json"
    if previous.is_file():
        return int(json.loads(previous.read_text(encoding="utf-8"))["seed"])
    return random.SystemRandom().randrange(2**31)


def _member_runs(run: CrossValidateRun) -> list[tuple[str, int, dict[str, Any]]]:
    """(run name, seed offset, options) of each model of a fold: ``--members`` seeds of the recipe and of each
    ``--variant`` (the recipe with more flags, already resolved into ``run.variants``)."""
    n_seeds = run.members
    recipes = [("", {})] + [(f"_v{k + 1}", changes) for k, changes in enumerate(run.variants)]
    if len(recipes) == 1 and n_seeds == 1:
        return [("model", 0, {})]
    return [(f"model{tag}_s{offset}", offset, changes) for tag, changes in recipes for offset in range(n_seeds)]


def _chosen_folds(run: CrossValidateRun, folds: dict[str, list[str]]) -> list[str]:
    """``--only-folds a,b`` (to spread folds over processes or machines), else every fold."""
    if not run.only_folds:
        return list(folds)
    chosen = [f.strip() for f in str(run.only_folds).split(",") if f.strip()]
    unknown = [f for f in chosen if f not in folds]
    if unknown:
        raise AamError(f"no fold named {unknown[0]!r} (folds: {', '.join(list(folds)[:10])})", source="--only-folds")
    return chosen


def _usable_samples(run: CrossValidateRun) -> tuple[list[str], pd.DataFrame, str]:
    """Ids of the table with a usable target (minus ``--exclude-samples``), the metadata and the target."""
    from aam.workflows.samples import exclude_samples
    from aam.workflows.train import ids_with_target

    metadata = read_metadata(run.metadata)
    column = run.target_column
    require_column(metadata, column, source=run.metadata)
    table_ids = [str(s) for s in load_table(run.table).ids(axis="sample")]
    ids = align_samples(table_ids, metadata, source=run.metadata)
    return exclude_samples(ids_with_target(metadata, column, ids, run), run.split), metadata, column


def _folds(run: CrossValidateRun, out: Path, ids: list[str], metadata: pd.DataFrame, column: str,
           seed: int) -> tuple[dict[str, list[str]], pd.DataFrame | None]:
    """The outer folds: from ``folds.tsv`` of an earlier run, from ``--folds FILE``, or made here; with the
    table to write as ``folds.tsv`` (None when it exists)."""
    saved = out / "folds.tsv"
    if saved.is_file():
        folds = _read_fold_file(saved, "fold", ids)
        log.info("using the folds of %s", saved)
        return folds, None
    groups = sample_groups(metadata, ids, run.split, target=column)  # the same checks as aam train's
    if run.folds:
        folds = _read_fold_file(run.folds, run.fold_column, ids)
    else:
        if groups is None and run.leave_one_group_out:
            raise AamError("needs --group-column", source="--leave-one-group-out")
        stratify = metadata.loc[ids, column].astype(str).to_numpy() if run.classifier else None
        folds = make_folds(ids, run.n_folds, seed, groups=groups, stratify=stratify,
                           leave_one_group_out=run.leave_one_group_out)
    fold_of = {s: name for name, members in folds.items() for s in members}
    frame = pd.DataFrame({"sample_id": list(fold_of), "fold": list(fold_of.values())})
    if groups is not None:
        group_of = dict(zip(ids, groups))
        frame["group"] = [group_of[s].lstrip("\x00") for s in frame["sample_id"]]
        _check_groups_within_folds(frame)
    log.info("%d folds of %s samples: %s", len(folds), len(frame),
             ", ".join(f"{k} ({len(v)})" for k, v in folds.items()))
    return folds, frame


def _read_fold_file(path: str | Path, fold_column: str, ids: list[str]) -> dict[str, list[str]]:
    """``{fold: test ids}`` from a TSV of sample ids and folds, restricted to the usable ``ids``."""
    from aam.data.split import read_folds

    usable = set(ids)
    folds = {name: [s for s in test if s in usable] for name, (_, test) in read_folds(str(path), fold_column).items()}
    listed = {s for test in folds.values() for s in test}
    if len(listed) < len(ids):
        log.warning("%d usable sample(s) are in no fold of %s and are left out", len(ids) - len(listed), path)
    empty = [name for name, test in folds.items() if not test]
    if empty:
        raise AamError(f"fold {empty[0]!r} holds no usable sample", source=path,
                       hint="every fold needs samples of the table with a target value")
    return folds


def _check_groups_within_folds(frame: pd.DataFrame) -> None:
    spread = frame.groupby("group")["fold"].nunique()
    crossing = spread[spread > 1]
    if len(crossing):
        log.warning("%d group(s) have samples in more than one fold (e.g. %s): those folds are not grouped",
                    len(crossing), crossing.index[0])


def _run_baseline(run: CrossValidateRun, out: Path, name: str, column: str, group_column: str | None,
                  seed: int) -> pd.DataFrame:
    """A classical baseline's out-of-fold predictions over ``folds.tsv`` (``aam rf-baseline --baseline name``
    into ``out/<name>/``; fitted once, reused on a rerun)."""
    from aam.workflows.rf_baseline import run_rf_baseline

    output = out / name / "predictions.tsv"
    if not output.is_file():
        log.info("baseline %s on the same folds", name)
        run_rf_baseline(RfBaselineRun(table=run.table, metadata=run.metadata, metadata_column=column,
                                      output=str(output), folds=str(out / "folds.tsv"), group_column=group_column,
                                      baseline=name, n_estimators=run.rf_n_estimators,
                                      max_features=run.rf_max_features, tree=run.tree, random_seed=seed,
                                      n_jobs=run.rf_n_jobs,
                                      classifier=run.classifier, verbose=run.verbose))
    return pd.read_csv(output, sep="\t", dtype={"sample_id": str, "fold": str})


def _run_fold(run: CrossValidateRun, out: Path, name: str, held_out: list[str], test_ids: list[str],
              metadata: pd.DataFrame, column: str, seed: int, members: list[tuple[str, int, dict[str, Any]]],
              label: str) -> None:
    """Train every member without the ``held_out`` samples, then predict the fold's ``test_ids`` with their
    average; skipped when the fold's predictions exist, resumed from a member's last checkpoint."""
    from aam.workflows.predict import run_predict
    from aam.workflows.train import run_train

    fold_dir = out / "folds" / name
    done = fold_dir / "predictions.tsv"
    if done.is_file():
        return
    fold_dir.mkdir(parents=True, exist_ok=True)
    excluded = set(held_out) | (set(read_ids(run.exclude_samples)) if run.exclude_samples else set())
    write_ids(fold_dir / "test_samples.txt", sorted(excluded))
    encoder = _pretrain_fold(run, fold_dir, seed, label) if run.pretrain_epochs else None
    checkpoints = []
    for k, (run_name, offset, changes) in enumerate(members):
        run_dir = fold_dir / run_name
        checkpoints.append(run_dir / "checkpoints" / "best_model.pt")
        if (run_dir / "train_finished.txt").is_file():
            continue
        last = run_dir / "checkpoints" / "last_model.pt"
        log.info("%s: training %s without its %d held-out samples%s", label,
                 f"member {k + 1}/{len(members)}" if len(members) > 1 else "the model", len(test_ids),
                 " (resuming)" if last.is_file() else "")
        fold_run = _without_unread_scores(run.recipe(
            **changes, output_dir=str(run_dir), seed=seed + offset, report=False,
            exclude_samples=str(fold_dir / "test_samples.txt"), resume_from=str(last) if last.is_file() else None,
            **({"pretrained_encoder": str(encoder)} if encoder is not None else {})))
        try:
            run_train(fold_run)
        except KeyboardInterrupt:
            log.warning("interrupted during %s; run the same command again to resume it", label)
            raise
        except RunInterrupted as stop:
            raise RunInterrupted(stop.signal_number, stop.checkpoint, f"{label}, {stop.where}", rerun=True) from None
        (run_dir / "train_finished.txt").write_text("finished\n", encoding="utf-8")
    configure_logging(out / "cross_validate.log", run.verbose)  # training logged to its run dir
    missing = [str(p) for p in checkpoints if not p.is_file()]
    if missing:
        raise AamError("training wrote no best checkpoint (no epoch gave a finite score)", source=missing[0],
                       hint="check the fold's training.log")
    forest = checkpoints[0].parent.parent / FOREST_FILE if run.blend_names else None
    frame = run_predict(PredictRun(
        model_paths=tuple(str(p) for p in checkpoints), table=run.table, output=str(fold_dir / "raw_predictions.tsv"),
        metadata=run.metadata, sequences=run.sequences, batch_size=max(32, run.batch_size), device=run.device,
        seed=seed, sample_ids=tuple(test_ids), forest=None if forest is None else str(forest)))
    frame = _with_actual(frame, metadata, column, run.classifier).assign(fold=name)
    write_tsv(done, frame)  # the fold is finished once this file exists
    score = score_predictions(frame, run.classifier)
    log.info("%s: AAM %s", label, "  ".join(f"{k}={v:.4g}" for k, v in score.items()))


def _without_unread_scores(fold_run: TrainRun) -> TrainRun:
    """A fold's tree read-out (boosted, forest) skips the inner cross-validation that only scores it
    (``--group-inner-score``), unless the baseline blend weighs it by that: the outer fold scores the model, and
    the fitted trees are the same either way. (``--group-readout`` is refused for families that do not own it,
    so the read-out alone says the family.)"""
    if fold_run.group_readout in TREE_READOUTS and not fold_run.blend_weighs_inner_predictions:
        return dataclasses.replace(fold_run, group_inner_score=False)
    return fold_run


def _pretrain_fold(run: CrossValidateRun, fold_dir: Path, seed: int, label: str) -> Path:
    """``--pretrain-epochs N``: ``aam pretrain`` (UniFrac targets from ``--tree``/``--unifrac-matrix``) on the
    fold's training samples only, with the recipe's model options; returns its encoder (reused on a rerun)."""
    from aam.workflows.pretrain import run_pretrain

    run_dir = fold_dir / "pretrain"
    encoder = run_dir / "pretrained_encoder.pt"
    if encoder.is_file():
        return encoder
    last = run_dir / "checkpoints" / "last_model.pt"
    pretrain = PretrainRun.from_options(
        run.options(), ignore_unknown=True, output_dir=str(run_dir), epochs=run.pretrain_epochs, seed=seed,
        nuc_penalty=0.0, penalty=1.0, exclude_samples=str(fold_dir / "test_samples.txt"),
        resume_from=str(last) if last.is_file() else None)
    log.info("%s: pretraining the encoder on UniFrac for %d epochs without the fold", label, run.pretrain_epochs)
    run_pretrain(pretrain)
    return encoder


def _with_actual(frame: pd.DataFrame, metadata: pd.DataFrame, column: str, classifier: bool) -> pd.DataFrame:
    values = metadata.loc[frame["sample_id"], column]
    actual = values.astype(str).str.strip() if classifier else values.astype(float)
    return frame.assign(actual=actual.to_numpy())


def _read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"sample_id": str, "fold": str, "prediction": object})


def _summarise(out: Path, aam: pd.DataFrame, baselines: dict[str, pd.DataFrame], metadata: pd.DataFrame,
               group_column: str | None, classifier: bool, column: str, recipes: int = 1) -> dict[str, Any]:
    """Write the out-of-fold table, the per-fold comparison, per-group scores, the summary and the plot.
    ``recipes``: the AAM recipes averaged in ``aam`` (the recipe and each ``--variant``)."""
    methods = {"aam": typed_predictions(aam, classifier)}
    methods.update({name: typed_predictions(frame, classifier) for name, frame in baselines.items()})
    if baselines:
        methods["blend"] = _blend(methods["aam"], [methods[name] for name in baselines], classifier, recipes)
    if group_column:
        for name, frame in methods.items():
            methods[name] = frame.assign(group=frame["sample_id"].map(metadata[group_column]).astype(str))
    _write_oof(out, methods, classifier)
    metric = PRIMARY_METRIC[classifier]
    summary: dict[str, Any] = {"metric": metric, "target": column,
                               "n_folds": int(aam["fold"].nunique()), "n_samples": len(aam)}
    for name, frame in methods.items():
        per_fold = scores_by(frame, "fold", classifier)
        summary[name] = {"pooled": score_predictions(frame, classifier),
                         "fold_mean": per_fold.drop(columns=["fold", "n"]).mean().to_dict(),
                         "fold_sd": per_fold.drop(columns=["fold", "n"]).std(ddof=1).to_dict()}
    summary["scored_on"] = _scored_on(summary, list(methods), metric)
    summary["best_method"] = _best(summary, list(methods), metric)
    best = _best(summary, list(baselines), metric)
    comparison = _comparison(methods, classifier, best, list(baselines))
    write_tsv(out / "comparison.tsv", comparison)
    if best is not None:
        summary["baselines"] = list(baselines)
        summary["best_baseline"] = best
        folds = ~comparison["fold"].isin(["pooled", "mean", "sd"])
        summary["aam_fold_wins_vs"] = {name: int((comparison.loc[folds, f"winner_vs_{name}"] == "aam").sum())
                                       for name in baselines}
        summary["aam_fold_wins"] = summary["aam_fold_wins_vs"][best]
    if group_column:
        groups = _side_by_side([scores_by(f, "group", classifier) for f in methods.values()], list(methods), "group")
        write_tsv(out / "groups.tsv", groups)
        for name, frame in methods.items():
            means = group_means(frame, classifier)
            if means is not None:
                summary[name]["by_group"] = {"n_groups": len(means), **score_predictions(means, classifier)}
    write_json(out / "summary.json", summary)
    _plot(out / "plots" / "cross_validation.png", comparison, methods, classifier, column, best)
    _log_summary(summary, list(methods), out)
    return summary


def _scored_on(summary: dict[str, Any], names: list[str], metric: str) -> str:
    """``fold_mean``, or ``pooled`` when no method has a finite fold score (e.g. AUROC on folds of one class, as
    leave-one-person-out folds of a per-person label are): what the best method and baseline are chosen on."""
    return "fold_mean" if any(np.isfinite(summary[n]["fold_mean"][metric]) for n in names) else "pooled"


def _best(summary: dict[str, Any], names: list[str], metric: str) -> str | None:
    """Of ``names``, the method with the best score on ``summary["scored_on"]`` (the first listed on a tie); None
    without names."""
    if not names:
        return None
    sign = -1.0 if metric_direction(metric) == "min" else 1.0
    scores = [sign * summary[name][summary["scored_on"]][metric] for name in names]
    scores = [s if np.isfinite(s) else -np.inf for s in scores]
    return names[int(np.argmax(scores))]


def _blend(aam: pd.DataFrame, baselines: list[pd.DataFrame], classifier: bool, recipes: int = 1) -> pd.DataFrame:
    """The equal-weight average of every model, sample by sample: each AAM recipe (``aam`` is the mean of
    ``recipes`` of them: the recipe and its ``--variant``s; seeds of one recipe count once) and each baseline;
    predictions (regression) or class probabilities and their argmax (classification), as ``aam train
    --blend-baselines <the same> --blend-weights equal`` and ``aam predict --forest`` average them (with several
    recipes, ``--forest-weight`` baselines / (baselines + recipes)). Scored as one more method, never used to
    choose."""
    return blend_many([aam, *baselines], [float(recipes)] + [1.0] * len(baselines), classifier)


def _write_oof(out: Path, methods: dict[str, pd.DataFrame], classifier: bool) -> None:
    """One row per sample: fold, group, actual, and each method's prediction (and class probabilities)."""
    keys = [c for c in ("sample_id", "fold", "group", "actual") if c in methods["aam"].columns]
    table = methods["aam"][keys].copy()
    for name, frame in methods.items():
        keep = ["prediction"] + (probability_columns(frame) if classifier else [])
        renamed = frame.set_index("sample_id")[keep].add_prefix(f"{name}_")
        table = table.join(renamed, on="sample_id")
    write_tsv(out / "oof_predictions.tsv", table)


def _side_by_side(tables: list[pd.DataFrame], names: list[str], key: str) -> pd.DataFrame:
    merged = None
    for name, table in zip(names, tables):
        scored = table.set_index([key, "n"]).add_prefix(f"{name}_")
        merged = scored if merged is None else merged.join(scored, how="outer")
    return merged.reset_index()


def _comparison(methods: dict[str, pd.DataFrame], classifier: bool, best: str | None,
                baselines: list[str]) -> pd.DataFrame:
    """Per-fold scores side by side, who won each fold between AAM and each baseline (``winner_vs_<name>``) and
    against the best baseline (``winner``, naming it), and pooled/mean/sd rows."""
    names = list(methods)
    per_fold = _side_by_side([scores_by(f, "fold", classifier) for f in methods.values()], names, "fold")
    metric = PRIMARY_METRIC[classifier]
    pooled = {"fold": "pooled", "n": len(methods["aam"])}
    for name, frame in methods.items():
        pooled.update({f"{name}_{k}": v for k, v in score_predictions(frame, classifier).items()})
    numeric = per_fold.drop(columns=["fold", "n"])
    rows = [pooled, {"fold": "mean", "n": np.nan, **numeric.mean().to_dict()},
            {"fold": "sd", "n": np.nan, **numeric.std(ddof=1).to_dict()}]
    table = pd.concat([per_fold, pd.DataFrame(rows)], ignore_index=True)
    better = np.less if metric_direction(metric) == "min" else np.greater
    a = table[f"aam_{metric}"].to_numpy(float)
    for name in baselines:
        b = table[f"{name}_{metric}"].to_numpy(float)
        undecided = np.isnan(a) | np.isnan(b) | (table["fold"] == "sd").to_numpy()
        table[f"winner_vs_{name}"] = np.where(undecided, "", np.where(better(a, b), "aam",
                                                                       np.where(a == b, "tie", name)))
    if best is not None:
        table["winner"] = table[f"winner_vs_{best}"]
    return table


def _plot(path: Path, comparison: pd.DataFrame, methods: dict[str, pd.DataFrame], classifier: bool,
          column: str, best: str | None = None) -> None:
    """Per-fold scores of each method (left) and, for regression, out-of-fold predictions vs actual (right)."""
    from aam.outputs.plots import plt, save_figure

    metric = PRIMARY_METRIC[classifier]
    folds = comparison[~comparison["fold"].isin(["pooled", "mean", "sd"])]
    figure, axes = plt.subplots(1, 1 if classifier else 2, figsize=(6.5 if classifier else 13, 4), squeeze=False)
    ax = axes[0, 0]
    x = np.arange(len(folds))
    width = 0.8 / len(methods)
    for k, name in enumerate(methods):
        ax.bar(x + k * width - 0.4 + width / 2, folds[f"{name}_{metric}"].astype(float), width, label=name)
    ax.set_xticks(x, folds["fold"].astype(str), rotation=45 if len(folds) > 6 else 0, ha="right")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{metric.upper()} per fold" + (f" (best baseline: {best})" if best else ""))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # beside the bars, not over them
    if not classifier:
        ax = axes[0, 1]
        for name, frame in methods.items():
            ax.scatter(frame["actual"], frame["prediction"], s=6, alpha=0.5, label=name)
        low = min(frame["actual"].min() for frame in methods.values())
        high = max(frame["actual"].max() for frame in methods.values())
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
        ax.set_xlabel(f"actual {column}")
        ax.set_ylabel("out-of-fold prediction")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.tight_layout()
    save_figure(figure, path)  # cropped to the content, the legends beside the axes included


def _log_summary(summary: dict[str, Any], names: list[str], out: Path) -> None:
    metric = summary["metric"]

    def score(name: str) -> str:
        part = summary[name]
        return (f"{name} {part['fold_mean'][metric]:.4g} +/- {part['fold_sd'][metric]:.2g} "
                f"(pooled {part['pooled'][metric]:.4g})")

    text = f"cross-validation over {summary['n_folds']} folds, {metric} per fold: " + "; ".join(map(score, names))
    log.info(text)
    if "best_baseline" in summary:
        best = summary["best_baseline"]
        log.info("best classical baseline: %s; AAM better on %d of %d folds against it (%s)", best,
                 summary["aam_fold_wins"], summary["n_folds"],
                 ", ".join(f"{k}: {v}" for k, v in summary["aam_fold_wins_vs"].items()))
    if "by_group" in summary["aam"]:
        parts = [f"{name} {summary[name]['by_group'][metric]:.4g}" for name in names if "by_group" in summary[name]]
        log.info("each group's mean prediction scored as one call (%d groups): %s %s",
                 summary["aam"]["by_group"]["n_groups"], metric, ", ".join(parts))
    log.info("outputs: %s (comparison.tsv, oof_predictions.tsv, summary.json, plots/cross_validation.png)", out)
