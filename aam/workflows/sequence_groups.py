"""``aam train --model-type sequence-groups``: fit the sequence-group composition model and write a run folder
that ``aam predict`` and ``aam cross-validate`` use like any other (``aam.workflows.fitted_run``), plus
``sequence_groups.json`` (the inner cross-validation)."""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse

from aam.data.clades import CLADE_PREVALENCE, select_clades
from aam.errors import AamError
from aam.fileio import write_json
from aam.models.build import build_model
from aam.models.sequence_groups import MODEL_TYPE, SequenceGroupsConfig
from aam.models.sequence_groups_fit import fit_sequence_groups, select_anchors
from aam.objectives.scoring import score_predictions
from aam.training.trainer import FitResult
from aam.workflows.fitted_run import FitInputs, every_sample_targets, fitted_data_config, write_fitted_run
from aam.workflows.forest_blend import fit_baseline_blend
from aam.workflows.run_config import TrainRun

log = logging.getLogger("aam")


def parse_group_counts(value: str | None) -> tuple[int, ...]:
    """'8,16,32,64' -> (8, 16, 32, 64); one line naming the flag when it is not a list of integers >= 2."""
    try:
        counts = tuple(int(part) for part in (value or "").split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 2:
        raise AamError(f"expected a comma list of group counts of at least 2, e.g. 8,16,32,64; got {value!r}",
                       source="--sequence-groups")
    return counts


def _fitting_group_counts(counts: tuple[int, ...], table) -> tuple[int, ...]:
    """The default resolutions less those with more groups than the training samples have distinct ASVs (a
    small table), with a warning; given counts are kept as they are (the fit names the flag if one is too
    large)."""
    if counts != SequenceGroupsConfig.group_counts:
        return counts
    distinct = len(np.unique(table.indices))
    fitting = tuple(c for c in counts if c <= distinct)
    if fitting and fitting != counts:
        log.warning("the training samples hold %d distinct ASVs: using %s groups per resolution instead of %s "
                    "(--sequence-groups)", distinct, ",".join(map(str, fitting)), ",".join(map(str, counts)))
        return fitting
    return counts


def _boosted_loss(run: TrainRun) -> str:
    """The trees' regression loss in scikit-learn's name: --group-boosted-loss for the boosted read-out on
    regression, else the config's default (nothing reads it)."""
    if run.classifier or run.group_readout != "boosted":
        return SequenceGroupsConfig.boosted_loss
    return run.group_boosted_loss.replace("-", "_")


def tree_clades(run: TrainRun, data, rows: np.ndarray) -> sparse.csr_matrix | None:
    """``--group-clades``: the clade membership [U, C] of the ASVs the training samples hold (table order), from
    ``--tree`` (:func:`~aam.data.clades.select_clades`); None without the flag or when no clade
    qualifies (with a warning)."""
    if not run.group_clades:
        return None
    from aam.unifrac.tree import tree_incidence

    counts = sparse.csr_matrix(data.counts[rows])
    used = np.unique(counts.indices)
    clades = select_clades(tree_incidence(run.tree, [data.asv_ids[i] for i in used]), counts[:, used])
    if not clades.shape[1]:
        log.warning("--group-clades: no clade of the tree holds two or more of the %d training ASVs in %g%% of the "
                    "samples; the model has no clade features", len(used), 100 * CLADE_PREVALENCE)
        return None
    log.info("sequence groups: %d clades of the tree over %d training ASVs", clades.shape[1], len(used))
    return clades


def train_sequence_groups(inputs: FitInputs) -> FitResult:
    """Fit on every usable sample (the inner cross-validation, grouped by ``--group-column``, chooses the
    shrinkage and gives the out-of-fold predictions) and write the run."""
    run, data, main, seed = inputs.run, inputs.data, inputs.session.is_main, inputs.session.seed
    targets = every_sample_targets(inputs)
    classifier, rows, ids, groups, setup = run.classifier, targets.rows, targets.ids, targets.groups, targets.setup
    counts = _fitting_group_counts(parse_group_counts(run.sequence_groups), data.counts[rows])
    anchors = select_anchors(data.counts[rows], groups, run.group_anchors)
    clades = tree_clades(run, data, rows)
    config = SequenceGroupsConfig(group_counts=counts,
                                  clusterings=run.group_clusterings,
                                  kmer_size=run.group_kmer_size,
                                  positions=run.max_bp if run.group_positions else 0,
                                  anchors=len(anchors), centred=run.group_centred,
                                  diversity=run.group_diversity, classifier=classifier,
                                  clades=0 if clades is None else clades.shape[1],
                                  clade_tips=0 if clades is None else clades.shape[0],
                                  readout=run.group_readout,
                                  boosted_loss=_boosted_loss(run),
                                  out_dim=len(setup.class_labels) if classifier else 1)
    model = build_model(config)
    log.info("sequence groups: %d samples%s, resolutions %s, %d anchor ASVs, %d-mer profiles%s", len(ids),
             "" if groups is None else f" of {len(np.unique(groups))} groups",
             ",".join(map(str, config.group_counts)), config.anchors, config.kmer_size,
             f" and {config.positions} positions" if config.positions else "")
    fit = fit_sequence_groups(model, data.counts[rows], data.tokens, setup.model_targets, groups, seed, anchors,
                              kmeans_starts=run.group_kmeans_starts, inner_score=run.group_inner_score,
                              clades=clades)
    frame, scores = None, {}  # a tree read-out fitted without its inner score has neither
    if fit.out_of_fold is not None:
        frame = targets.decode(fit.out_of_fold)
        scores = score_predictions(frame, classifier)
        log.info("inner out-of-fold scores (%s, %d ASVs in %s groups): %s", fit.inner_scheme, fit.n_asvs,
                 "+".join(map(str, config.group_counts)), "  ".join(f"{k}={v:.4g}" for k, v in scores.items()))
    data_info = fitted_data_config(inputs, targets)
    report = {"model_type": config.model_type, "parameter": fit.parameter, "chosen": fit.chosen,
              "scoring": fit.scoring, "inner_scheme": fit.inner_scheme, "grid": fit.grid, "n_samples": len(ids),
              "n_asvs": fit.n_asvs, "n_clades": config.clades, "group_sizes": {str(k): v for k, v in fit.group_sizes.items()},
              "out_of_fold_scores": scores}
    if run.blend_names:
        choice = fit_baseline_blend(data.counts[rows], data.asv_ids, ids, setup.actual, fit.splits, frame,
                                    classifier, run.target_column, seed, inputs.output_dir if main else None,
                                    names=run.blend_names, mode=run.blend_weights, groups=groups, tree=run.tree)
        report["forest_blend"] = choice.to_dict()
        data_info = data_info.replace(forest_weight=choice.weight)
    if main:
        write_json(inputs.output_dir / "sequence_groups.json", report)
    return write_fitted_run(inputs, targets, family=MODEL_TYPE, model=model, model_config=config.to_dict(),
                            predictions=frame, data_info=data_info, chosen={fit.parameter: fit.chosen})
