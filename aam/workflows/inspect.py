"""``aam inspect``: a model card read from a checkpoint alone (what it predicts, from which data and options,
how it scored, with which versions). Checkpoints written before a field existed say "not recorded"."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aam.families import MODEL_FAMILIES
from aam.outputs.checkpoint import load_checkpoint
from aam.workflows.run_config import flag

NOT_RECORDED = "not recorded"
METRIC_ORDER = ("val_mae", "val_rmse", "val_r2", "val_auroc", "val_accuracy", "val_f1", "val_loss")


def model_card(path: str | Path) -> dict[str, Any]:
    """The card as plain data (JSON-ready)."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    data = checkpoint.get("data") or {}
    config = checkpoint.get("model_config") or {}
    run = data.get("run") or {}
    state = checkpoint.get("training_state") or {}
    weights = checkpoint.get("model_state") or {}
    card: dict[str, Any] = {
        "file": str(path),
        "kind": checkpoint.get("kind"),
        "model_type": checkpoint["family"],
        "created": checkpoint.get("created", NOT_RECORDED),
        "versions": checkpoint.get("versions", {}),
        "parameters": int(sum(v.numel() for v in weights.values() if hasattr(v, "numel"))),
    }
    if checkpoint.get("kind") == "predictor":
        transform = data.get("target_transform")
        card["task"] = "classification" if data.get("classifier") else "regression"
        card["target"] = data.get("metadata_column", NOT_RECORDED)
        card["classes"] = data.get("class_labels")
        card["target_transform"] = transform if transform else ("none" if not data.get("classifier") else None)
        encoder = data.get("categorical_encoder") or {}
        card["categorical_levels"] = {column: sorted(levels, key=str) for column, levels in
                                      (encoder.get("mappings") or {}).items()}
        if data.get("forest_weight") is not None:
            card["forest_weight"] = data["forest_weight"]
    training_asvs = data.get("training_asvs")
    card["training"] = {
        "samples": run.get("n_train", NOT_RECORDED), "validation_samples": run.get("n_val", NOT_RECORDED),
        "group_column": run.get("group_column"), "groups": run.get("n_groups"),
        "asvs": NOT_RECORDED if training_asvs is None else int(len(training_asvs)),
        "table": (run.get("options") or {}).get("table", NOT_RECORDED), "seed": run.get("seed", data.get("seed")),
        "max_bp": data.get("max_bp"), "token_limit": data.get("token_limit"),
    }
    card["metrics"] = _metrics(state, run, checkpoint["family"])
    card["options"] = run.get("options", NOT_RECORDED)
    card["architecture"] = {k: v for k, v in (config.get("encoder", config)).items()
                            if not isinstance(v, (dict, list))}
    return card


def _metrics(state: dict[str, Any], run: dict[str, Any], family: str) -> dict[str, Any]:
    """The epoch this checkpoint holds and its validation scores, or the inner scores of a model fitted without
    epochs (sequence groups)."""
    trained_by_epochs = family not in MODEL_FAMILIES or MODEL_FAMILIES[family].capabilities.epochs
    if not trained_by_epochs:
        return {"scores": run.get("inner_scores", NOT_RECORDED), "on": "inner out-of-fold predictions",
                "chosen": run.get("chosen")}
    history = state.get("history") or []
    if not history:
        return {"scores": NOT_RECORDED}
    row = history[-1]  # the epoch the checkpoint was written at: the best one for best_model.pt
    scores = {k: row[k] for k in METRIC_ORDER if k in row and isinstance(row[k], (int, float))
              and math.isfinite(row[k])}
    return {"epoch": int(row.get("epoch", len(history) - 1)) + 1, "scores": scores, "on": "the validation split"}


def format_card(card: dict[str, Any]) -> str:
    """The card as readable text."""
    lines = [f"AAM model card: {card['file']}",
             f"  kind           {card['kind']} ({card['model_type']}), {card['parameters']:,} stored numbers "
             "(weights and buffers)"]
    if "task" in card:
        target = f"{card['task']} of {card['target']!r}"
        if card.get("classes"):
            target += f", classes {', '.join(map(str, card['classes']))}"
        lines.append(f"  predicts       {target}")
        transform = card.get("target_transform")
        if isinstance(transform, dict):
            details = ", ".join(f"{k}={_short(v)}" for k, v in transform.items() if k != "name")
            lines.append(f"  target scale   {transform.get('name')} ({details})")
        for column, levels in (card.get("categorical_levels") or {}).items():
            lines.append(f"  categorical    {column}: {', '.join(map(str, levels))}")
        if "forest_weight" in card:
            lines.append(f"  forest blend   weight {card['forest_weight']:.2f} on forest.joblib (the baselines of "
                         "--forest-blend / --blend-baselines; aam predict --forest RUN/forest.joblib)")
    training = card["training"]
    groups = (f", grouped by {training['group_column']!r} ({training['groups']} groups)"
              if training.get("group_column") else "")
    lines += [f"  trained on     {training['samples']} samples ({training['validation_samples']} validation){groups}",
              f"                 {training['asvs']} distinct ASVs, from {training['table']}",
              f"                 max_bp {training['max_bp']}, token limit {_limit(training['token_limit'])}, "
              f"seed {training['seed']}"]
    metrics = card["metrics"]
    scores = metrics.get("scores")
    if isinstance(scores, dict) and scores:
        where = metrics.get("on", "")
        epoch = f" at epoch {metrics['epoch']}" if "epoch" in metrics else ""
        lines.append(f"  scores         {'  '.join(f'{k}={v:.4g}' for k, v in scores.items())} "
                     f"({where}{epoch})")
    else:
        lines.append(f"  scores         {NOT_RECORDED}")
    versions = card.get("versions") or {}
    lines.append(f"  written        {card['created']} by aam {versions.get('aam', '?')}, torch "
                 f"{versions.get('torch', '?')}, python {versions.get('python', '?')}")
    options = card.get("options")
    if isinstance(options, dict):
        shown = {k: v for k, v in sorted(options.items()) if v not in (None, False, "", [], ())}
        lines.append("  options        " + " ".join(f"{flag(k)}={_short(v)}" for k, v in shown.items()))
    else:
        lines.append(f"  options        {NOT_RECORDED}")
    return "\n".join(lines)


def _limit(value: Any) -> str:
    return "every ASV" if isinstance(value, int) and value >= 2**31 - 1 else str(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in list(value.items())[:6]) + (
            ", ..." if len(value) > 6 else "") + "}"
    return str(value)
