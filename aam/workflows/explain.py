"""``aam explain``: which ASVs a trained model (or ensemble) relies on, for the given samples.

Each sample's ASVs are attributed by occlusion (``aam.workflows.attribution``): the answer with the ASV less
the answer without it, in original target units or class probabilities. For an ensemble the effect is the
mean over members (exactly the effect on the ensemble's averaged answer). Per ASV: importance = mean size of
the effect over all given samples (0 where the ASV is absent), the mean signed effect where present (per
class for classifiers), how consistent its sign is across samples (and, for ensembles, the spread of its
importance across members). A deletion check removes each sample's top-k attributed ASVs and k random ones
and compares how far the answers move. Models with categorical metadata also get the effect of setting each
column to unknown, and gated or cross-attention fusion its gate or attention per category.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aam.data.categorical import CategoricalEncoder
from aam.data.dataset import BatchCollator, make_loader
from aam.data.metadata import read_metadata, require_column
from aam.data.split import group_labels, read_ids
from aam.data.taxonomy import feature_label, read_taxonomy
from aam.errors import AamError
from aam.fileio import write_json, write_tsv
from aam.models.layers import attention_backend
from aam.outputs.data_config import DataConfig
from aam.training.forward import forward_batch
from aam.training.runtime import configure_threads, resolve_device
from aam.workflows.attribution import (
    answer_reader,
    answer_shift,
    answers_without,
    gradient_effects,
    occlusion_effects,
    shared_asv_embeddings,
)
from aam.workflows.inputs import load_amplicon_data
from aam.workflows.loading import family_of_model, load_predictor
from aam.workflows.predict import check_compatible, member_inputs
from aam.workflows.run_config import ExplainRun
from aam.workflows.run_folder import run_directory, write_run_config

log = logging.getLogger("aam")

DELETION_KS = (1, 5, 10)
RANDOM_DRAWS = 5  # random k-subsets per sample in the deletion check


@dataclass
class MemberResult:
    """One checkpoint's answers and effects over the given samples."""

    answers: dict[int, np.ndarray] = field(default_factory=dict)  # data row -> [C]
    effects: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (data row, table column) -> [C]
    categorical: list[dict[str, Any]] = field(default_factory=list)  # per sample, column: effect
    fusion: list[dict[str, Any]] = field(default_factory=list)  # per sample, column: gate / attention


def run_explain(run: ExplainRun) -> dict[str, Any]:
    """Write the attribution tables, the deletion check and a plot to ``run.output_dir``; return the summary."""
    paths, method, metadata, group_column = list(run.model_paths), run.method, run.metadata, run.group_column
    taxa = read_taxonomy(run.taxonomy) if run.taxonomy is not None else None
    sample_ids = read_ids(run.samples) if run.samples is not None else None
    frame = read_metadata(metadata) if metadata is not None else None
    if group_column is not None:
        require_column(frame, group_column, source=metadata, flag="--group-column")
    torch_device = resolve_device(run.device)
    configure_threads(torch_device)
    with run_directory(run.output_dir, resume=False) as out:
        members, data, decoder = [], None, None
        first_info = DataConfig()
        for i, path in enumerate(paths):
            model, info = load_predictor(path, torch_device)
            if method == "gradient" and not family_of_model(model).capabilities.gradient_attribution:
                raise AamError("gradient attribution needs a model with gradients at its ASV vectors (the "
                               "transformer)", source="--method", hint="use --method occlusion (works for every model)")
            if method == "gradient" and info.quantiles:
                raise AamError("gradient attribution does not support quantile heads", source="--method",
                               hint="use --method occlusion")
            if i == 0:
                first_info = info
                data = load_amplicon_data(run.table, sequences_path=run.sequences, max_bp=info.max_bp)
            else:
                check_compatible(first_info, info, paths[0], path)
                if info.max_bp != first_info.max_bp:
                    raise AamError("ensemble members read sequences of different lengths (--max-bp)", source=path)
            if sample_ids is not None and i == 0:
                sample_ids = [data.sample_ids[r] for r in data.rows_of(sample_ids, source=run.samples)]
            dataset, decoder = member_inputs(info, data, frame, metadata, sample_ids)
            loader = make_loader(dataset, BatchCollator(data.tokens, data.sample_ids), run.batch_size,
                                 shuffle=False)
            with attention_backend(run.attn_implementation, torch_device):
                members.append(_attribute(model, loader, decoder, method, info))
            log.info("attributed %d samples with %s (model %d of %d)", len(members[-1].answers), method, i + 1,
                     len(paths))
            del model
        classes = decoder.class_labels if decoder.classifier else []
        answers, effects = _ensemble(members)
        groups = None if group_column is None else _groups_of(frame, group_column, data, answers)
        importance = _asv_table(data, effects, members, answers, classes, taxa, groups)
        write_tsv(out / "asv_importance.tsv", importance)
        sample_top = _sample_top(data, effects, answers, classes, taxa, run.top_per_sample)
        write_tsv(out / "sample_top_asvs.tsv", sample_top)
        deletion = _deletion_check(paths, data, frame, metadata, effects, answers, run.batch_size, run.seed,
                                   torch_device, run.attn_implementation, sample_ids)
        write_tsv(out / "deletion_check.tsv", deletion)
        extra_outputs = _categorical_outputs(out, members, classes)
        _plot_top(importance, out / "plots" / "top_asvs.png", run.top_asvs, classes)
        summary = _summary(paths, method, importance, deletion, members, answers, classes, extra_outputs)
        if groups is not None:
            summary["group_column"] = group_column
            summary["importance_share_single_group"] = _single_group_share(importance)
        write_json(out / "summary.json", summary)
        write_run_config(out, "explain", run.options(), {"method": method})
        if run.report:
            from aam.reporting.explanation import write_explanation_report

            log.info("report: %s", write_explanation_report(out))
    _log_deletion(deletion)
    if groups is not None:
        _log_single_group_share(summary["importance_share_single_group"], group_column)
    log.info("wrote ASV attributions of %d samples to %s", len(answers), run.output_dir)
    return summary


def _attribute(model, loader, decoder, method: str, info: DataConfig) -> MemberResult:
    """Answers, per-ASV effects, categorical effects and fusion diagnostics of one model."""
    device = next(model.parameters()).device
    read = answer_reader(decoder)
    encoder = CategoricalEncoder.from_dict(dict(info.categorical_encoder)) if info.categorical_encoder else None
    result = MemberResult()
    for batch in loader:
        batch = batch.to(device)
        full, effects = (occlusion_effects if method == "occlusion" else gradient_effects)(model, batch, read)
        rows = batch.sample_index.cpu().numpy()
        columns = batch.asv_ids[batch.asv_index].cpu().numpy()  # [B, S] table column of each slot
        for b, row in enumerate(rows):
            result.answers[int(row)] = full[b]
            for s in np.flatnonzero(np.isfinite(effects[b, :, 0])):
                result.effects[(int(row), int(columns[b, s]))] = effects[b, s]
        if encoder is not None and batch.categoricals is not None:
            result.categorical += _categorical_effects(model, batch, read, full, encoder)
            result.fusion += _fusion_values(model, batch, encoder)
    return result


@torch.no_grad()
def _categorical_effects(model, batch, read, full: np.ndarray, encoder: CategoricalEncoder) -> list[dict]:
    """Per sample and categorical column: the answer less the answer with that column set to unknown."""
    records = []
    embeddings = shared_asv_embeddings(model, batch)
    kwargs = {} if embeddings is None else {"asv_embeddings": embeddings}
    for k, column in enumerate(encoder.columns):
        categoricals = batch.categoricals.clone()
        categoricals[:, k] = 0
        outputs = forward_batch(model, dataclasses.replace(batch, categoricals=categoricals), **kwargs)
        without = read(outputs["prediction"].float(), batch.sample_index.cpu().numpy())
        for b in range(len(batch)):
            level = encoder.inverse(column, int(batch.categoricals[b, k])) or "unknown"
            records.append({"column": column, "level": level, "effect": full[b] - without[b]})
    return records


@torch.no_grad()
def _fusion_values(model, batch, encoder: CategoricalEncoder) -> list[dict]:
    """Per sample: the gated fusion's mean gate (weight of the sequence path) or the cross-attention's mean
    weight on each categorical column, keyed by the sample's level of every column."""
    outputs = forward_batch(model, batch)
    values: dict[str, np.ndarray] = {}
    if "gate" in outputs:
        values["sequence_gate"] = outputs["gate"].float().mean(-1).cpu().numpy()
    if "cross_attention_weights" in outputs:
        weights = outputs["cross_attention_weights"].float()  # [B, S, K]
        mask = batch.asv_mask.unsqueeze(-1).to(weights.dtype)
        mean = ((weights * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu().numpy()  # [B, K]
        for k, column in enumerate(encoder.columns):
            values[f"attention_{column}"] = mean[:, k]
    if not values:
        return []
    records = []
    for b in range(len(batch)):
        for k, column in enumerate(encoder.columns):
            level = encoder.inverse(column, int(batch.categoricals[b, k])) or "unknown"
            records.append({"column": column, "level": level, **{n: float(v[b]) for n, v in values.items()}})
    return records


def _ensemble(members: list[MemberResult]) -> tuple[dict[int, np.ndarray], dict[tuple[int, int], np.ndarray]]:
    """Mean answers and mean effects over members (an ASV a member did not read has no effect on it)."""
    answers = {row: np.mean([m.answers[row] for m in members], axis=0) for row in members[0].answers}
    effects: dict[tuple[int, int], np.ndarray] = {}
    for member in members:
        for key, value in member.effects.items():
            effects[key] = effects.get(key, 0.0) + value / len(members)
    return answers, effects


def _effect_arrays(effects: dict[tuple[int, int], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = np.array(list(effects.keys()), dtype=np.int64).reshape(-1, 2)
    values = np.array(list(effects.values()), dtype=np.float64)
    return keys[:, 0], keys[:, 1], values.reshape(len(keys), -1)


def _per_sample(effects: dict[tuple[int, int], np.ndarray]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(data row, table columns [n], effects [n, C]) of each sample, sorted once instead of searched per sample."""
    sample_rows, asv_columns, values = _effect_arrays(effects)
    order = np.lexsort((asv_columns, sample_rows))
    sample_rows, asv_columns, values = sample_rows[order], asv_columns[order], values[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sample_rows) != 0]) if len(sample_rows) else np.zeros(0, int)
    for start, end in zip(starts, np.r_[starts[1:], len(sample_rows)]):
        yield int(sample_rows[start]), asv_columns[start:end], values[start:end]


def _asv_table(data, effects, members: list[MemberResult], answers: dict[int, np.ndarray],
               classes: list[str], taxa: dict[str, str] | None, groups: np.ndarray | None = None) -> pd.DataFrame:
    """One row per ASV read by the model in at least one given sample, by importance."""
    rows_given = np.array(sorted(answers), dtype=np.int64)
    n_given = len(rows_given)
    counts = data.counts[rows_given]
    relative = counts.multiply(1.0 / np.maximum(counts.sum(axis=1), 1)).tocsc()
    holders = counts.tocsc()  # per ASV, the given samples holding it
    occurrence = np.diff(holders.indptr)
    mean_share = np.asarray(relative.sum(axis=0)).ravel() / max(n_given, 1)
    _, asv_columns, values = _effect_arrays(effects)
    attributed = np.unique(asv_columns)
    n_columns = values.shape[1]
    shift = answer_shift(values)
    importance = np.bincount(asv_columns, weights=shift, minlength=len(data.asv_ids)) / max(n_given, 1)
    n_read = np.bincount(asv_columns, minlength=len(data.asv_ids))
    mean_effect = np.stack([np.bincount(asv_columns, weights=values[:, c], minlength=len(data.asv_ids))
                            for c in range(n_columns)], axis=1) / np.maximum(n_read, 1)[:, None]
    direction_column = (np.argmax(mean_effect, axis=1) if classes else np.zeros(len(data.asv_ids), dtype=np.int64))
    sign = np.sign(mean_effect[np.arange(len(data.asv_ids)), direction_column])
    agree = np.bincount(asv_columns, weights=(np.sign(values[np.arange(len(values)), direction_column[asv_columns]])
                                              == sign[asv_columns]).astype(float), minlength=len(data.asv_ids))
    table = pd.DataFrame({"feature_id": [data.asv_ids[j] for j in attributed]})
    if taxa is not None:
        table["taxon"] = [taxa.get(data.asv_ids[j], "") for j in attributed]
    table["importance"] = importance[attributed]
    if classes:
        for c, label in enumerate(classes):
            table[f"effect_{label}"] = mean_effect[attributed, c]
        table["raises"] = [classes[direction_column[j]] for j in attributed]
    else:
        table["effect"] = mean_effect[attributed, 0]
        table["direction"] = np.where(mean_effect[attributed, 0] >= 0, "+", "-")
    table["sign_agreement"] = agree[attributed] / np.maximum(n_read[attributed], 1)
    if len(members) > 1:
        per_member = np.stack([_member_importance(m, len(data.asv_ids), n_given) for m in members])  # [M, A]
        table["importance_member_sd"] = per_member[:, attributed].std(axis=0, ddof=1)
    table["n_samples"] = occurrence[attributed]
    if groups is not None:  # [n_given] group of each given sample, in rows_given order
        table["n_groups"] = [len(set(groups[holders.indices[holders.indptr[j]:holders.indptr[j + 1]]]))
                             for j in attributed]
    table["n_read"] = n_read[attributed]
    table["mean_relative_abundance"] = mean_share[attributed]
    table["sequence"] = [_sequence(data, j) for j in attributed]
    table = table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def _groups_of(frame: pd.DataFrame, column: str, data, answers: dict[int, np.ndarray]) -> np.ndarray:
    """The group of each explained sample (in data-row order), a sample without one being its own group."""
    ids = [data.sample_ids[r] for r in sorted(answers)]
    values = frame[column].reindex(ids).to_numpy()
    return group_labels(values, ids)


def _single_group_share(importance: pd.DataFrame) -> float:
    """Share of the total importance carried by ASVs that occur in one group only."""
    total = float(importance["importance"].sum())
    single = float(importance.loc[importance["n_groups"] == 1, "importance"].sum())
    return single / total if total > 0 else float("nan")


SINGLE_GROUP_WARNING = 0.5


def _log_single_group_share(share: float, column: str) -> None:
    message = ("%.0f%% of the attribution is on ASVs found in one %s only%s", 100 * share, column,
               ": the model may recognise groups (people, studies) rather than a signal that transfers to new ones"
               if share > SINGLE_GROUP_WARNING else "")
    (log.warning if share > SINGLE_GROUP_WARNING else log.info)(*message)


def _member_importance(member: MemberResult, n_asvs: int, n_given: int) -> np.ndarray:
    _, columns, values = _effect_arrays(member.effects)
    return np.bincount(columns, weights=answer_shift(values), minlength=n_asvs) / max(n_given, 1)


def _sequence(data, column: int) -> str:
    return data.sequences[column] if data.sequences is not None else data.asv_ids[column]


def _sample_top(data, effects, answers, classes: list[str], taxa: dict[str, str] | None,
                top: int) -> pd.DataFrame:
    """Each sample's ``top`` ASVs by the size of their effect; for classifiers the signed effect is on the
    probability of the sample's predicted class."""
    records = []
    for row, cols, vals in _per_sample(effects):
        answer = answers[row]
        predicted = int(np.argmax(answer)) if classes else 0
        depth = max(float(data.counts[row].sum()), 1.0)
        for rank, k in enumerate(np.argsort(-answer_shift(vals), kind="stable")[:top], start=1):
            record = {"sample_id": data.sample_ids[row],
                      "prediction": classes[predicted] if classes else float(answer[0]),
                      "rank": rank, "feature_id": data.asv_ids[cols[k]]}
            if taxa is not None:
                record["taxon"] = taxa.get(data.asv_ids[cols[k]], "")
            record["effect"] = float(vals[k, predicted])
            record["relative_abundance"] = float(data.counts[row, cols[k]]) / depth
            records.append(record)
    return pd.DataFrame(records)


CRITERIA = ("largest |effect|", "largest effect toward the answer")


def _deletion_check(paths, data, frame, metadata, effects, answers, batch_size: int, seed: int,
                    device: torch.device, attn_implementation: str, sample_ids: list[str] | None) -> pd.DataFrame:
    """For k in DELETION_KS, each sample loses k ASVs chosen by the attribution or k random ones of those the
    model read (RANDOM_DRAWS draws). Two criteria: the k largest effects by size, measured by how far the
    (ensemble's) answer moves (|change|, or total variation for class probabilities); and the k largest effects
    toward the answer (raising the prediction, or the predicted class's probability), measured by how much the
    answer drops (a region-perturbation check)."""
    rng = np.random.default_rng(seed)
    plans: dict[tuple[int, int, str, int], set[int]] = {}  # (k, criterion, top|random_i, row) -> columns removed
    by_sample = {row: (cols, vals) for row, cols, vals in _per_sample(effects)}
    for row in answers:  # the samples' order fixes the random draws
        if row not in by_sample:
            continue
        cols, vals = by_sample[row]
        toward = int(np.argmax(answers[row])) if vals.shape[1] > 1 else 0
        rankings = (cols[np.argsort(-answer_shift(vals), kind="stable")],
                    cols[np.argsort(-vals[:, toward], kind="stable")])
        for k in DELETION_KS:
            if len(cols) <= k:
                continue
            draws = [set(rng.choice(cols, size=k, replace=False).tolist()) for _ in range(RANDOM_DRAWS)]
            for criterion, ranked in enumerate(rankings):
                plans[(k, criterion, "top", row)] = set(ranked[:k].tolist())
                for d, draw in enumerate(draws):
                    plans[(k, criterion, f"random_{d}", row)] = draw
    keys = list(plans)
    if not keys:
        return pd.DataFrame(columns=["k", "removed", "measure", "n_samples", "top", "random", "difference", "ratio"])
    after = np.zeros((len(keys), len(next(iter(answers.values())))))
    for path in paths:
        model, info = load_predictor(path, device)
        dataset, decoder = member_inputs(info, data, frame, metadata, sample_ids)
        loader = make_loader(dataset, BatchCollator(data.tokens, data.sample_ids), batch_size, shuffle=False)
        with attention_backend(attn_implementation, device):
            after += _answers_after_removal(model, loader, answer_reader(decoder), plans, keys) / len(paths)
        del model
    records = []
    for k in DELETION_KS:
        for criterion, name in enumerate(CRITERIA):
            chosen = [i for i, key in enumerate(keys) if key[0] == k and key[1] == criterion]
            if not chosen:
                continue
            measured = np.array([_moved(answers[keys[i][3]], after[i], criterion) for i in chosen])
            top = np.array([keys[i][2] == "top" for i in chosen])
            ok = np.isfinite(measured)
            top_mean, random_mean = float(measured[top & ok].mean()), float(measured[~top & ok].mean())
            records.append({"k": k, "removed": name,
                            "measure": "mean |change|" if criterion == 0 else "mean drop of the answer",
                            "n_samples": int((top & ok).sum()), "top": top_mean, "random": random_mean,
                            "difference": top_mean - random_mean,
                            "ratio": top_mean / random_mean if random_mean > 0 else float("nan")})
    return pd.DataFrame(records)


def _moved(before: np.ndarray, after: np.ndarray, criterion: int) -> float:
    """How far an answer moved (criterion 0), or how much it dropped on its own column (criterion 1)."""
    if criterion == 0:
        return float(answer_shift(before - after))
    column = int(np.argmax(before)) if len(before) > 1 else 0
    return float(before[column] - after[column])


def _answers_after_removal(model, loader, read, plans, keys) -> np.ndarray:
    """[len(keys), C] one model's answers for every planned removal (NaN where a removal empties what the
    model reads of the sample)."""
    device = next(model.parameters()).device
    by_row: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_row.setdefault(key[-1], []).append(i)
    result = np.full((len(keys), 0), np.nan)
    for batch in loader:
        batch = batch.to(device)
        rows = batch.sample_index.cpu().numpy()
        columns = batch.asv_ids[batch.asv_index].cpu().numpy()  # [B, S]
        mask = batch.asv_mask.cpu().numpy()
        variant_rows, removed, targets = [], [], []
        for b, row in enumerate(rows):
            for i in by_row.get(int(row), []):
                drop = np.isin(columns[b], list(plans[keys[i]])) & mask[b]
                variant_rows.append(b)
                removed.append(drop)
                targets.append(i)
        if not targets:
            continue
        removed_t = torch.as_tensor(np.stack(removed), device=device)
        empty = ~(batch.asv_mask[torch.as_tensor(variant_rows, device=device)] & ~removed_t).any(1)
        removed_t[empty] = False  # evaluated whole, then discarded
        out = answers_without(model, batch, np.array(variant_rows), removed_t, read,
                              shared_asv_embeddings(model, batch))
        out[empty.cpu().numpy()] = np.nan
        if result.shape[1] == 0:
            result = np.full((len(keys), out.shape[1]), np.nan)
        result[targets] = out
    return result


def _categorical_outputs(out: Path, members: list[MemberResult], classes: list[str]) -> list[str]:
    """``categorical_effects.tsv`` and (gmu, cross-attention) ``fusion.tsv``, when the model has categoricals."""
    written = []
    records = [r for m in members for r in m.categorical]
    if records:
        effect = np.stack([r["effect"] for r in records])
        frame = pd.DataFrame({"column": [r["column"] for r in records], "level": [r["level"] for r in records],
                              "importance": answer_shift(effect)})
        names = [f"effect_{c}" for c in classes] if classes else ["effect"]
        for c, name in enumerate(names):
            frame[name] = effect[:, c]
        write_tsv(out / "categorical_effects.tsv", _per_level(frame, len(members)))
        written.append("categorical_effects.tsv")
    fusion = [r for m in members for r in m.fusion]
    if fusion:
        write_tsv(out / "fusion.tsv", _per_level(pd.DataFrame(fusion), len(members)))
        written.append("fusion.tsv")
    return written


def _per_level(frame: pd.DataFrame, n_members: int) -> pd.DataFrame:
    """Means per categorical column and level, with the samples behind each (every member saw each sample)."""
    grouped = frame.groupby(["column", "level"], sort=True)
    table = grouped.mean().reset_index()
    table.insert(2, "n_samples", grouped.size().to_numpy() // n_members)
    return table


def _plot_top(importance: pd.DataFrame, path: Path, top: int, classes: list[str]) -> None:
    from aam.outputs.plots import plt, save_figure

    shown = importance.head(top).iloc[::-1]
    labels = [_label(r) for _, r in shown.iterrows()]
    if classes:
        kinds = shown["raises"].tolist()
        palette = dict(zip(classes, plt.get_cmap("tab10").colors))
        colours = [palette[k] for k in kinds]
    else:
        kinds = ["raises the prediction" if d == "+" else "lowers the prediction" for d in shown["direction"]]
        colours = ["tab:red" if d == "+" else "tab:blue" for d in shown["direction"]]
    figure, axis = plt.subplots(figsize=(8, 0.3 * len(shown) + 1.5), layout="constrained")
    axis.barh(range(len(shown)), shown["importance"], color=colours)
    axis.set_yticks(range(len(shown)), labels, fontsize="small")
    axis.set_xlabel("importance (mean change of the answer when the ASV is removed)")
    handles = {k: plt.Rectangle((0, 0), 1, 1, color=c) for k, c in zip(kinds, colours)}
    axis.legend(handles.values(), [k if not classes else f"raises {k}" for k in handles], fontsize="small",
                loc="lower right")
    axis.set_title(f"Top {len(shown)} ASVs")
    save_figure(figure, path, dpi=120, tight=False)


def _label(row: pd.Series) -> str:
    taxon = row.get("taxon", "")
    return feature_label(str(row["feature_id"]), "" if pd.isna(taxon) else str(taxon))


def _summary(paths, method, importance: pd.DataFrame, deletion: pd.DataFrame, members, answers, classes,
             extra: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "models": paths, "method": method, "task": "classification" if classes else "regression",
        "classes": classes, "n_samples": len(answers), "n_asvs_attributed": int(len(importance)),
        "deletion_check": deletion.to_dict(orient="records"),
        "outputs": ["asv_importance.tsv", "sample_top_asvs.tsv", "deletion_check.tsv", "plots/top_asvs.png",
                    *extra],
    }
    if len(members) > 1 and "importance_member_sd" in importance:
        summary["member_rank_correlation"] = _member_rank_correlation(members, answers)
    return summary


def _member_rank_correlation(members: list[MemberResult], answers) -> float:
    """Mean Spearman correlation, over pairs of members, of their per-ASV importances (ASVs any member read)."""
    from scipy.stats import spearmanr

    n_asvs = 1 + max(max(c for _, c in m.effects) for m in members)
    vectors = np.stack([_member_importance(m, n_asvs, len(answers)) for m in members])
    used = vectors.any(axis=0)
    pairs = [spearmanr(vectors[i, used], vectors[j, used]).statistic for i in range(len(members))
             for j in range(i + 1, len(members))]
    return float(np.nanmean(pairs))


def _log_deletion(deletion: pd.DataFrame) -> None:
    for record in deletion.to_dict(orient="records"):
        log.info("deletion check, %d ASV(s) with the %s removed per sample: %s %.4g vs %.4g for random ones "
                 "(%d samples)", record["k"], record["removed"].removeprefix("largest "), record["measure"],
                 record["top"], record["random"], record["n_samples"])
