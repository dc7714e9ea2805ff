"""Steps shared by the pretrain, train and predict workflows: loading data, distance targets, run folders."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aam import __version__
from aam.data.biom_table import load_table, rarefy, table_to_csr
from aam.data.dataset import (
    AmpliconData,
    BatchCollator,
    EpochShuffleSampler,
    MatrixDistanceLookup,
    SampleDataset,
    make_loader,
)
from aam.data.distances import (
    align_distance_matrix,
    align_sample_vector,
    read_distance_matrix,
    read_sample_vector,
)
from aam.data.metadata import require_column
from aam.data.sequences import resolve_sequences, tokenize
from aam.data.split import (
    group_labels,
    grouped_train_val_split,
    groups_on_both_sides,
    read_ids,
    suggest_group_column,
    train_val_split,
)
from aam.errors import AamError
from aam.fileio import write_json
from aam.training.distributed import (
    DistributedContext,
    ResumableDistributedSampler,
    ShardSampler,
    broadcast_object,
    init_distributed,
    shutdown,
)
from aam.training.runtime import (
    configure_threads,
    detach_log_files,
    memory_usage,
    resolve_device,
    seed_everything,
)

log = logging.getLogger("aam")

# --unifrac-metric (reference names) -> built-in engine metric
ENGINE_METRICS = {"unifrac": "unweighted", "weighted": "weighted-normalized", "faith_pd": "faith_pd"}
EXCLUSIVE_PARALLEL_FLAGS = ("distributed", "data_parallel", "fsdp")


def load_amplicon_data(table_path: str | Path, *, sequences_path: str | Path | None = None, max_bp: int = 150,
                       rarefy_depth: int | None = None, seed: int | None = None) -> AmpliconData:
    """Read a BIOM table (optionally rarefied) and tokenise its ASV sequences once."""
    table = load_table(table_path)
    if rarefy_depth is not None:
        table, _ = rarefy(table, rarefy_depth, seed)  # logs how many samples were too shallow
    count_table = table_to_csr(table)
    sequences = resolve_sequences(count_table.feature_ids, sequences_path, source=table_path)
    tokenized = tokenize(sequences, max_bp)  # logs how many sequences were truncated
    log.info("table %s: %d samples x %d ASVs", table_path, count_table.counts.shape[0], count_table.counts.shape[1])
    return AmpliconData(count_table.counts, tokenized.tokens, count_table.sample_ids, count_table.feature_ids,
                        sequences=sequences)


@dataclass
class DistanceTargets:
    """Per-batch distance targets: a lookup for ``BatchCollator`` and the rows of samples that have them."""

    lookup: Callable[[np.ndarray], np.ndarray]
    rows: np.ndarray  # rows of AmpliconData with a target
    metric: str


def load_distance_targets(data: AmpliconData, *, unifrac_matrix: str | None, tree: str | None,
                          metric: str) -> DistanceTargets | None:
    """Distance targets from ``--unifrac-matrix`` or computed on the fly from ``--tree``; None when neither."""
    if unifrac_matrix and tree:
        raise AamError("give either --unifrac-matrix or --tree, not both", source="--tree")
    if unifrac_matrix:
        return _targets_from_file(data, unifrac_matrix, metric)
    if tree:
        return _targets_from_tree(data, tree, metric)
    return None


def _targets_from_file(data: AmpliconData, path: str, metric: str) -> DistanceTargets:
    per_sample = metric == "faith_pd"
    matrix = read_sample_vector(path) if per_sample else read_distance_matrix(path)
    ids = data.sample_ids
    if matrix.ids is not None:
        present = set(matrix.ids)
        ids = [s for s in data.sample_ids if s in present]
        missing = len(data.sample_ids) - len(ids)
        if missing:
            log.warning("%d table sample(s) are not in %s and are left out", missing, path)
        if not ids:
            raise AamError("no sample id of the table is in the distance file", source=path,
                           hint="compute it from this table's samples (aam unifrac)")
    rows = data.rows_of(ids)
    if per_sample:
        full = np.zeros(data.n_samples, dtype=np.float32)
        full[rows] = align_sample_vector(matrix, ids, source=path)
    else:
        full = np.zeros((data.n_samples, data.n_samples), dtype=np.float32)
        full[np.ix_(rows, rows)] = align_distance_matrix(matrix, ids, source=path)
    return DistanceTargets(MatrixDistanceLookup(full), rows, metric)


class EngineDistanceLookup:
    """Distances of a batch computed on the fly by the UniFrac engine (picklable for DataLoader workers)."""

    def __init__(self, prepared):
        self.prepared = prepared

    def __call__(self, sample_index: np.ndarray) -> np.ndarray:
        return self.prepared.batch(sample_index, dtype="float32")


def _targets_from_tree(data: AmpliconData, tree: str, metric: str) -> DistanceTargets:
    from aam.unifrac import UniFracEngine, load_tree

    parsed = load_tree(Path(tree))
    try:
        engine = UniFracEngine(parsed, data.asv_ids, source=tree)
    except AamError:
        if data.sequences is None or data.sequences == data.asv_ids:
            raise
        engine = UniFracEngine(parsed, data.sequences, source=tree)  # tree tips named by sequence
    rows = np.arange(data.n_samples)
    if metric == "faith_pd":
        return DistanceTargets(MatrixDistanceLookup(engine.faith_pd(data.counts)), rows, metric)
    return DistanceTargets(EngineDistanceLookup(engine.prepare(data.counts, ENGINE_METRICS[metric])), rows, metric)


def build_loaders(data: AmpliconData, train_rows: np.ndarray, val_rows: np.ndarray, *, batch_size: int,
                  token_limit: int, asv_sampling: str, seed: int, num_workers: int = 0,
                  distance_lookup: Callable | None = None, train_targets: np.ndarray | None = None,
                  val_targets: np.ndarray | None = None, train_categoricals: np.ndarray | None = None,
                  val_categoricals: np.ndarray | None = None, train_weights: np.ndarray | None = None,
                  pin_memory: bool = False, distributed: DistributedContext | None = None,
                  read_fraction: float | None = None, train_data: AmpliconData | None = None):
    """Training loader (shuffled, ``asv_sampling``, reads thinned to ``read_fraction`` each epoch when given)
    and validation loader (every sample, abundance-first, all reads). ``train_data`` (the same samples and
    ASVs, some reads removed) replaces ``data`` for the training samples."""
    collator = BatchCollator(data.tokens, data.sample_ids, distance_lookup)
    train_set = SampleDataset(data if train_data is None else train_data, train_rows, train_targets,
                              train_categoricals, token_limit, asv_sampling, seed, sample_weights=train_weights,
                              read_fraction=read_fraction)
    val_set = SampleDataset(data, val_rows, val_targets, val_categoricals, token_limit, "abundance", seed)
    if distributed is not None:  # same permutation on every rank, each takes its share
        train_sampler = ResumableDistributedSampler(train_set, distributed.world_size, distributed.rank,
                                                    shuffle=True, seed=seed)
        val_sampler = ShardSampler(len(val_set), distributed.rank, distributed.world_size)
    else:
        train_sampler, val_sampler = EpochShuffleSampler(len(train_set), seed), None
    train_loader = make_loader(train_set, collator, batch_size, shuffle=True, num_workers=num_workers,
                               pin_memory=pin_memory, sampler=train_sampler)
    val_loader = make_loader(val_set, collator, batch_size, shuffle=False, num_workers=num_workers,
                             pin_memory=pin_memory, sampler=val_sampler)
    return train_loader, val_loader


def split_samples(ids: list[str], opts: dict[str, Any], seed: int, stratify: np.ndarray | None = None,
                  groups: np.ndarray | None = None) -> tuple[list[str], list[str]]:
    """Train and validation ids: from ``--val-samples FILE`` (e.g. a cross-validation fold) when given, else a
    seeded split of ``--test-size``, grouped (every group on one side) when ``groups`` are given."""
    if not opts.get("val_samples"):
        if groups is not None:
            return grouped_train_val_split(ids, groups, opts["test_size"], seed, stratify=stratify)
        return train_val_split(ids, opts["test_size"], seed, stratify=stratify)
    listed = set(read_ids(opts["val_samples"]))
    val_ids = [s for s in ids if s in listed]
    train_ids = [s for s in ids if s not in listed]
    missing = len(listed) - len(val_ids)
    if missing:
        log.warning("%d id(s) of %s are not usable samples of this run and are ignored", missing, opts["val_samples"])
    if not val_ids or not train_ids:
        raise AamError(f"leaves an empty {'validation' if not val_ids else 'training'} split", source="--val-samples",
                       hint="list some, but not all, of the table's sample ids (one per line)")
    if groups is not None:
        shared = groups_on_both_sides(train_ids, val_ids, dict(zip(ids, groups)))
        if shared:
            log.warning("%d group(s) of --group-column have samples on both sides of --val-samples (e.g. %s): "
                        "validation scores will flatter the model", len(shared), shared[0])
    return train_ids, val_ids


_SUGGESTED: set[tuple[Any, str]] = set()  # (metadata file, column) already suggested as --group-column


def sample_groups(metadata: Any, ids: list[str], opts: dict[str, Any], target: str | None = None,
                  inputs: tuple[str, ...] = ()) -> np.ndarray | None:
    """``--group-column``'s group of each id (None without it); without it, suggests a subject-like column once."""
    column = (opts.get("group_column") or "").strip()
    if not column:
        if metadata is not None and not opts.get("val_samples"):
            suggestion = suggest_group_column(metadata, ids, exclude=(target, *inputs))
            if suggestion is not None and (opts.get("metadata"), suggestion[0]) not in _SUGGESTED:
                _SUGGESTED.add((opts.get("metadata"), suggestion[0]))  # once per process (e.g. per CV run)
                log.warning("metadata column %r has %d values shared by %d samples: if they mark the same subject "
                            "or study, pass --group-column %s so validation measures new subjects (samples of "
                            "one subject on both sides flatter early stopping)", suggestion[0], suggestion[1],
                            len(ids), suggestion[0])
        return None
    if metadata is None:
        raise AamError("needs --metadata (the file with the group column)", source="--group-column")
    require_column(metadata, column, source=opts.get("metadata"), flag="--group-column")
    if column == target:
        raise AamError("the group column cannot be the target", source="--group-column")
    return group_labels(metadata.loc[ids, column].to_numpy(), ids)


def exclude_samples(ids: list[str], opts: dict[str, Any]) -> list[str]:
    """``ids`` without those listed in ``--exclude-samples FILE`` (e.g. an outer cross-validation test fold)."""
    if not opts.get("exclude_samples"):
        return ids
    excluded = set(read_ids(opts["exclude_samples"]))
    kept = [s for s in ids if s not in excluded]
    if not kept:
        raise AamError("excludes every usable sample", source="--exclude-samples")
    log.info("--exclude-samples: %d sample(s) left out of training and validation", len(ids) - len(kept))
    return kept


def check_options(opts: dict[str, Any]) -> None:
    """Cross-flag rules that click cannot express; each failure names the flag."""
    chosen = [f"--{name.replace('_', '-')}" for name in EXCLUSIVE_PARALLEL_FLAGS if opts.get(name)]
    if len(chosen) > 1:
        raise AamError(f"{' and '.join(chosen)} cannot be combined", source=chosen[1],
                       hint="--distributed: DDP via torchrun; --fsdp: sharded DDP via torchrun; "
                            "--data-parallel: one process, all GPUs")
    if opts.get("fsdp") and opts.get("ema_decay") is not None:
        raise AamError("a weight average does not combine with --fsdp", source="--ema-decay",
                       hint="drop --ema-decay, or use --distributed (DDP)")
    if opts.get("fsdp_sharded_checkpoint") and not opts.get("fsdp"):
        raise AamError("needs --fsdp", source="--fsdp-sharded-checkpoint")
    if opts.get("fsdp") and opts.get("mixed_precision") == "fp16":
        raise AamError("fp16 loss scaling does not combine with --fsdp", source="--mixed-precision",
                       hint="use --mixed-precision bf16 (no loss scaling needed)")
    positive = ("epochs", "batch_size", "gradient_accumulation_steps", "max_bp", "token_limit", "embedding_dim",
                "attention_heads", "attention_layers", "ffn_ratio")
    for name in positive:
        if name in opts and opts[name] is not None and opts[name] < 1:
            raise AamError(f"must be at least 1, got {opts[name]}", source=f"--{name.replace('_', '-')}")
    if opts["embedding_dim"] % opts["attention_heads"]:
        raise AamError(f"{opts['attention_heads']} heads do not divide --embedding-dim {opts['embedding_dim']}",
                       source="--attention-heads", hint="choose a head count that divides the width")
    if not 0 <= opts.get("nuc_mask_ratio", 0) < 1:
        raise AamError("must be in [0, 1)", source="--nuc-mask-ratio")
    if not 0 < opts["lr"]:
        raise AamError("must be positive", source="--lr")
    if not 0 <= opts.get("dropout", 0) < 1:
        raise AamError("must be in [0, 1)", source="--dropout")
    if not 0 < opts.get("max_memory_fraction", 1) <= 1:
        raise AamError("must be in (0, 1]", source="--max-memory-fraction")
    if (opts.get("target_effective_batch_size") or 1) < 1:
        raise AamError("must be at least 1", source="--target-effective-batch-size")


@dataclass
class Session:
    """The process's place in a run: device, distributed context, seed, and whether it writes files."""

    device: torch.device
    seed: int
    distributed: DistributedContext | None = None
    data_parallel: bool = False  # one process over all visible GPUs

    @property
    def is_main(self) -> bool:
        return self.distributed is None or self.distributed.is_main


def start_session(opts: dict[str, Any]) -> Session:
    """Pick the device, join torchrun's process group when asked, and agree on one seed across ranks."""
    if opts.get("use_expandable_segments"):
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    device = resolve_device(opts["device"])
    data_parallel = bool(opts.get("data_parallel"))
    if data_parallel and device.type != "cuda":
        raise AamError("needs CUDA GPUs", source="--data-parallel",
                       hint="on CPU, or for one process per device, use --distributed with "
                            "torchrun --nproc_per_node N")
    if data_parallel:
        log.info("DataParallel over %d GPU(s)", torch.cuda.device_count())
    strategy = "fsdp" if opts.get("fsdp") else "ddp" if opts.get("distributed") else None
    context = init_distributed(device, strategy) if strategy is not None else None
    if context is not None:
        device = context.device
    log.info("device %s, %d intra-op thread(s)", device, configure_threads(device))
    seed = broadcast_object(seed_everything(opts.get("seed")))
    seed_everything(seed)
    return Session(device, seed, context, data_parallel)


def search_batch_size(opts: dict[str, Any], session: Session, trainer: Any, train_loader: Any,
                      resumed: bool) -> dict[str, int] | None:
    """``--auto-batch-size``: ``batch_size`` and ``gradient_accumulation_steps`` for this GPU, or None.

    Without ``--target-effective-batch-size`` the accumulation steps stay as given; with it, they are the
    fewest that reach it. Runs that cannot be measured on one device (CPU, DDP, FSDP, DataParallel) and
    resumed runs (their schedule is laid out in steps of the old batch) keep ``--batch-size``.
    """
    if not opts.get("auto_batch_size"):
        return None
    why = ("it measures CUDA memory" if session.device.type != "cuda"
           else "it measures one process on one GPU" if session.distributed is not None or session.data_parallel
           else "a resumed run keeps its batch size" if resumed else None)
    if why is not None:
        log.info("--auto-batch-size skipped (%s): using --batch-size %d", why, opts["batch_size"])
        return None
    from aam.training.batch_size_finder import find_batch_size

    size = find_batch_size(trainer, train_loader.dataset, train_loader.collate_fn,
                           max_memory_fraction=opts["max_memory_fraction"])
    if size is None:
        raise AamError(f"2 samples per batch need more than {opts['max_memory_fraction']:g} of the GPU's memory",
                       source="--auto-batch-size",
                       hint="lower --token-limit or --embedding-dim, or add --mixed-precision bf16 or "
                            "--gradient-checkpointing")
    target = opts.get("target_effective_batch_size")
    steps = -(-target // size) if target else opts["gradient_accumulation_steps"]
    log.info("auto batch size: --batch-size %d --gradient-accumulation-steps %d (effective batch %d)",
             size, steps, size * steps)
    return {"batch_size": size, "gradient_accumulation_steps": steps}


def adopt_batch_size(opts: dict[str, Any], session: Session, trainer: Any, loaders: Callable[..., tuple],
                     current: tuple[Any, Any], resumed: bool) -> tuple[dict[str, Any], Any, Any]:
    """Options and (train, validation) loaders after ``--auto-batch-size``; logs ``--memory-profile``'s start.

    ``loaders(batch_size=...)`` rebuilds both loaders; ``current`` are the ones built with ``--batch-size``.
    The trainer's accumulation steps follow the search.
    """
    found = search_batch_size(opts, session, trainer, current[0], resumed=resumed)
    if found is not None:
        opts = {**opts, **found}
        current = loaders(batch_size=found["batch_size"])
        trainer.config = replace(trainer.config, gradient_accumulation_steps=found["gradient_accumulation_steps"])
    if opts.get("memory_profile"):
        log.info("memory with the model on %s (MiB): %s", session.device,
                 ", ".join(f"{k}={v:.0f}" for k, v in memory_usage(session.device).items()))
    return opts, *current


def run_in_session(opts: dict[str, Any], body: Callable[[dict[str, Any], Path, Session], Any]) -> Any:
    """Start a session, run ``body(opts, output_dir, session)`` in its run folder, leave the process group."""
    session = start_session(opts)
    try:
        with session_directory(session, opts) as output_dir:
            return body(opts, output_dir, session)
    finally:
        shutdown()


@contextmanager
def session_directory(session: Session, opts: dict[str, Any]) -> Iterator[Path]:
    """The run folder: created (and cleaned up on a user error) by the writing rank only."""
    if not session.is_main:
        yield Path(opts["output_dir"])
        return
    with run_directory(opts["output_dir"], resume=bool(opts.get("resume_from"))) as path:
        yield path


@contextmanager
def run_directory(path: str | Path, resume: bool) -> Iterator[Path]:
    """Create the run folder for the duration of a run.

    Refuses to mix a new run into a folder holding another run's checkpoints. If the run stops on a user
    error (``AamError``) and this run created the folder, the folder is removed, so bad input leaves nothing
    half-written behind.
    """
    path = Path(path)
    if any((path / "checkpoints" / name).exists() for name in ("last_model.pt", "last_model")) and not resume:
        raise AamError("already holds an aam run", source=path,
                       hint="choose a new --output-dir, or pass --resume-from to continue it")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except AamError:
        if created:
            detach_log_files()
            shutil.rmtree(path, ignore_errors=True)
        raise


def write_run_config(output_dir: Path, command: str, opts: dict[str, Any], extra: dict[str, Any]) -> None:
    """``config.json``: every resolved option (feedable back with --config), versions, seed and derived facts."""
    payload = {
        "command": command,
        "options": {k: v for k, v in opts.items() if k != "config"},
        "versions": {"aam": __version__, "torch": torch.__version__},
        **extra,
    }
    write_json(output_dir / "config.json", payload)
