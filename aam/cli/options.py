"""Shared click options, grouped into sections in ``--help``, and ``--config FILE`` support.

Option names and defaults follow the reference tool so its users' commands keep working; defaults that
differ on purpose say "(changed)" in their help.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from aam.cli.presets import PRESETS
from aam.errors import AamError
from aam.models.config import (
    ATTENTION_IMPLEMENTATIONS,
    DISTANCE_METRICS,
    MAX_KMER_SIZE,
)
from aam.models.registries import COUNT_EMBEDDINGS, MASK_STRATEGIES
from aam.registry import Registry
from aam.training.config import PRECISIONS
from aam.training.registries import OPTIMIZERS, SCHEDULERS
from aam.workflows.run_config import (
    CrossValidateRun,
    DemoRun,
    EmbedRun,
    ExplainRun,
    FitRun,
    InspectRun,
    PredictRun,
    RfBaselineRun,
    TrainRun,
    UnifracRun,
    defaults,
)

# every option's default comes from its run config (whose fields read the model and trainer configs)
FIT, TRAIN, CV, PREDICT = defaults(FitRun), defaults(TrainRun), defaults(CrossValidateRun), defaults(PredictRun)
EMBED, EXPLAIN, RF_BASELINE, UNIFRAC = (defaults(EmbedRun), defaults(ExplainRun), defaults(RfBaselineRun),
                                       defaults(UnifracRun))
INSPECT, DEMO = defaults(InspectRun), defaults(DemoRun)

SECTION_ORDER = ("Input", "Model", "Categorical", "Target", "Loss", "Training", "Cross-validation", "Performance",
                 "Distributed", "Output", "Other")


class SectionOption(click.Option):
    """A click option that remembers which ``--help`` section it belongs to."""

    def __init__(self, *args, section: str = "Other", **kwargs):
        super().__init__(*args, **kwargs)
        self.section = section


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists options under section headings."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "section", "Other"), []).append(record)
        for name in sorted(sections, key=lambda s: SECTION_ORDER.index(s) if s in SECTION_ORDER else 99):
            with formatter.section(f"{name} options"):
                formatter.write_dl(sections[name])


def option(*decls: str, section: str, **kwargs) -> Callable:
    kwargs.setdefault("show_default", True)
    return click.option(*decls, cls=SectionOption, section=section, **kwargs)


def apply(options: list[Callable]) -> Callable:
    """Apply a list of option decorators in order (first one listed shows first)."""

    def decorator(func: Callable) -> Callable:
        for opt in reversed(options):
            func = opt(func)
        return func

    return decorator


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--config FILE.json|yaml``: its keys (flag names, dashes or underscores) become defaults."""
    if value is None:
        return None
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except FileNotFoundError:
        raise AamError("config file not found", source=path) from None
    except Exception as err:
        raise AamError(f"cannot parse config file ({type(err).__name__}: {err})", source=path) from None
    if not isinstance(values, dict):
        raise AamError("config file must hold a mapping of option names to values", source=path)
    values = values.get("options", values)  # a config.json written by aam keeps options under "options"
    known = {p.name for p in ctx.command.params}
    defaults = {}
    for key, item in values.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in known:
            raise AamError(f"unknown option '{key}' in config file", source=path,
                           hint=f"see 'aam {ctx.command.name} --help' for the option names")
        if name != "config":
            defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


CONFIG = click.option("--config", type=click.Path(dir_okay=False), callback=_load_config_file, is_eager=True,
                      expose_value=False, cls=SectionOption, section="Other",
                      help="JSON or YAML file supplying any option (flag names as keys); flags on the command "
                           "line win. A run's config.json can be fed back.")

def _load_preset(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--preset NAME``: a named option set (``aam.cli.presets``) becomes the defaults."""
    if value is not None:
        command = "train" if ctx.command.name == "cross-validate" else ctx.command.name  # it runs aam train
        ctx.default_map = {**(ctx.default_map or {}), **PRESETS[value][command]}
    return value


PRESET = click.option("--preset", type=click.Choice(sorted(PRESETS)), callback=_load_preset, is_eager=True,
                      expose_value=False, cls=SectionOption, section="Other",
                      help="Named defaults: small-data = the CPU recipe of the oral-age benchmark (D 32, one layer, "
                           "32 ASVs, L1 loss, weight EMA; see README). Flags on the command line win.")

SEED = option("--seed", type=int, default=FIT.seed, section="Other",
              help="Random seed for splits, rarefaction, initialisation and masking; makes runs repeatable.")
DEVICE = option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default=FIT.device, section="Performance",
                help="Compute device; auto picks CUDA/ROCm when available (changed: was cuda).")
SEQUENCES = option("--sequences", type=click.Path(dir_okay=False), default=FIT.sequences, section="Input",
                   help="FASTA (or FeatureData[Sequence] .qza) mapping hashed feature ids to sequences.")
VERBOSE = option("--verbose/--quiet", default=FIT.verbose, section="Other", help="Progress bars and per-epoch logs.")


# ----------------------------------------------------------------------------- data
def data_options(pretrain: bool) -> list[Callable]:
    return [
        option("--table", type=click.Path(dir_okay=False), required=not pretrain, section="Input",
               **({"default": None} if pretrain else {}),
               help="BIOM table (1.0 JSON or 2.1 HDF5) or QIIME 2 FeatureTable[Frequency] .qza; feature ids are ASV "
                    "sequences or ids in --sequences." + (" Optional with --tables." if pretrain else "")),
        option("--sequences", type=click.Path(dir_okay=False), default=FIT.sequences, section="Input",
               help="FASTA (or FeatureData[Sequence] .qza) mapping hashed feature ids to sequences (when the "
                    "table's ids are not DNA)."),
        option("--unifrac-matrix", type=click.Path(dir_okay=False), default=FIT.unifrac_matrix, section="Input",
               help="Precomputed distances: .npy/.npz (table order), .h5 (unifrac-binaries), .csv/.tsv with ids. "
                    + ("Required unless --tree is given." if pretrain else "Optional (adds the UniFrac loss).")),
        option("--tree", type=click.Path(dir_okay=False), default=FIT.tree, section="Input",
               help="Newick tree (or Phylogeny[Rooted] .qza) of the table's ASVs: compute UniFrac targets with the "
                    "built-in engine instead of --unifrac-matrix; also read by --group-clades and by the "
                    "clr-linear-clades and boosted-clades baselines."),
        option("--unifrac-metric", type=click.Choice(DISTANCE_METRICS), default=FIT.unifrac_metric,
               section="Input", help="Distance target: unweighted UniFrac, weighted (normalised) UniFrac, or "
                                     "per-sample Faith PD."),
        option("--output-dir", type=click.Path(file_okay=False), required=True, section="Output",
               help="Run folder (created); holds config.json, checkpoints/, plots/, tensorboard/."),
        option("--rarefy-depth", type=int, default=FIT.rarefy_depth, section="Input",
               help="Rarefy to this many reads; shallower samples are dropped and counted (changed: default none, "
                    "counts used as given)."),
        option("--test-size", type=float, default=FIT.test_size, section="Input",
               help="Validation fraction of samples, in (0, 1)."),
        option("--val-samples", type=click.Path(dir_okay=False), default=FIT.val_samples, section="Input",
               help="File of validation sample ids, one per line (e.g. a cross-validation fold, or "
                    "val_samples.txt of another run); the other samples train. Replaces --test-size."),
        option("--group-column", default=FIT.group_column, section="Input",
               help="Metadata column of groups (a subject or study id): every group lies on one side of the "
                    "train/validation split, so early stopping rewards what transfers to new subjects."
                    + (" Needs --metadata." if pretrain else "")),
        option("--exclude-samples", type=click.Path(dir_okay=False), default=FIT.exclude_samples, section="Input",
               help="File of sample ids (one per line) kept out of training and validation, e.g. a held-out "
                    "test set or an outer cross-validation fold."),
        option("--max-bp", type=int, default=FIT.max_bp, section="Input",
               help="Nucleotides kept per ASV; longer sequences are truncated (and counted in the log)."),
        option("--token-limit", type=int, default=FIT.token_limit, section="Input", help="Maximum ASVs per sample."),
        option("--asv-sampling", type=click.Choice(["abundance", "first", "random"]), default=FIT.asv_sampling,
               section="Input", help="Which ASVs to keep beyond --token-limit (changed: default abundance, the "
                                     "most abundant first; random re-draws each training epoch)."),
        option("--no-sequence-cache", is_flag=True, default=FIT.no_sequence_cache, section="Input",
               help="Accepted for compatibility; sequences are always tokenised once per dataset."),
        option("--num-workers", type=int, default=FIT.num_workers, section="Performance",
               help="DataLoader worker processes (changed: default 0, was 4: a batch is collated in milliseconds "
                    "from arrays already in memory, and workers only add start-up time and memory; BENCHMARKS.md). "
                    "Workers stay up across epochs, except with --asv-sampling random or --augment-reads (items "
                    "change each epoch), where they restart every epoch."),
        option("--size-groups", type=click.IntRange(1, 64), default=FIT.size_groups, section="Performance",
               help="Run the sample-level transformers of each batch on this many groups of like-sized samples, "
                    "each padded to its own largest sample instead of the batch's (same outputs, less work on "
                    "padding; the distance loss still pairs the whole batch). 1: one pass per batch. Speed "
                    "per device in BENCHMARKS.md."),
    ]



class RegistryChoice(click.Choice):
    """A choice among a registry's names, read when the option is shown or parsed, so an implementation
    registered after this module loaded (a plug-in, a test's toy) is offered too."""

    def __init__(self, registry: Registry):
        self.registry = registry
        super().__init__(registry.names())

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.registry.names()

    @choices.setter
    def choices(self, _value) -> None:
        pass


# ----------------------------------------------------------------------------- model
MODEL_OPTIONS = [
    option("--embedding-dim", type=int, default=FIT.embedding_dim, section="Model", help="Width D of every transformer."),
    option("--attention-heads", type=int, default=FIT.attention_heads, section="Model", help="Attention heads; must divide D."),
    option("--attention-layers", type=int, default=FIT.attention_layers, section="Model",
           help="Layers of each transformer stack (nucleotide, ASV, sample, target)."),
    option("--ffn-ratio", type=int, default=FIT.ffn_ratio, section="Model", help="Feed-forward width as a multiple of D."),
    option("--dropout", type=float, default=FIT.dropout, section="Model", help="Dropout inside the transformers."),
    option("--kmer-size", type=click.IntRange(0, MAX_KMER_SIZE), default=FIT.kmer_size, section="Model",
           help="Add a learned k-mer bag (mean over each ASV's overlapping k-mers) to its nucleotide encoding; "
                "0 disables. 6 reads fast and tells near-identical ASVs apart."),
    option("--count-embedding/--no-count-embedding", default=FIT.count_embedding, section="Model",
           help="Feed each ASV's relative abundance (log1p) into its embedding."),
    option("--count-embedding-method", type=RegistryChoice(COUNT_EMBEDDINGS), default=FIT.count_embedding_method,
           section="Model", help="How the abundance enters the ASV embedding."),
    option("--nuc-mask-ratio", type=float, default=FIT.nuc_mask_ratio, section="Model",
           help="Fraction of nucleotide positions masked for the masked-nucleotide objective (0 disables)."),
    option("--nuc-mask-strategy", type=RegistryChoice(MASK_STRATEGIES), default=FIT.nuc_mask_strategy, section="Model",
           help="random: exactly --nuc-mask-ratio of each ASV's positions (rounded), so the nucleotide head "
                "runs at a fixed number of masked positions per ASV and nowhere else (before session 19 each "
                "position was masked independently); span: spans of 3-5 nucleotides, every position scored."),
]

LOSS_WEIGHT_OPTIONS = [
    option("--penalty", type=float, default=FIT.penalty, section="Loss", help="Weight of the UniFrac (distance) loss."),
    option("--nuc-penalty", type=float, default=FIT.nuc_penalty, section="Loss",
           help="Weight of the masked-nucleotide loss."),
]


# ----------------------------------------------------------------------------- training
TRAINING_OPTIONS = [
    option("--epochs", type=int, default=FIT.epochs, section="Training", help="Maximum epochs."),
    option("--batch-size", type=int, default=FIT.batch_size, section="Training",
           help="Samples per batch (per process under DDP/FSDP)."),
    option("--gradient-accumulation-steps", type=int, default=FIT.gradient_accumulation_steps, section="Training",
           help="Batches per optimizer step."),
    option("--lr", type=float, default=FIT.lr, section="Training", help="Peak learning rate."),
    option("--weight-decay", type=float, default=FIT.weight_decay, section="Training",
           help="Weight decay (not applied to biases and norms)."),
    option("--optimizer", type=RegistryChoice(OPTIMIZERS), default=FIT.optimizer, section="Training",
           help="Optimizer (SGD uses momentum 0.9)."),
    option("--scheduler", type=RegistryChoice(SCHEDULERS), default=FIT.scheduler, section="Training", help="Learning-rate schedule."),
    option("--warmup-steps", type=int, default=FIT.warmup_steps, section="Training",
           help="Warmup optimizer steps for warmup_cosine (changed: default 5%% of all steps)."),
    option("--scheduler-t0", type=int, default=FIT.scheduler_t0, section="Training",
           help="cosine_restarts first period in steps (default: total steps / 4)."),
    option("--scheduler-t-mult", type=int, default=FIT.scheduler_t_mult, section="Training",
           help="cosine_restarts period multiplier (default 2)."),
    option("--scheduler-eta-min", type=float, default=FIT.scheduler_eta_min, section="Training",
           help="Minimum learning rate of cosine schedules (default 0)."),
    option("--scheduler-patience", type=int, default=FIT.scheduler_patience, section="Training", help="plateau patience (default 5)."),
    option("--scheduler-factor", type=float, default=FIT.scheduler_factor, section="Training", help="plateau factor (default 0.3)."),
    option("--scheduler-min-lr", type=float, default=FIT.scheduler_min_lr, section="Training", help="plateau minimum LR (default 0)."),
    option("--patience", type=int, default=FIT.patience, section="Training",
           help="Early stopping: epochs without improvement of the selected metric."),
    option("--max-grad-norm", type=float, default=FIT.max_grad_norm, section="Training", help="Clip gradients to this norm."),
    option("--ema-decay", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=FIT.ema_decay,
           section="Training",
           help="Keep an exponential moving average of the weights (e.g. 0.99: a ~100-step horizon); validation "
                "scores it and checkpoints hold it. Steadies noisy small-data validation. Not with --fsdp."),
    option("--log-grad-norms", is_flag=True, default=FIT.log_grad_norms, section="Training",
           help="Log per-module gradient norms (fusion gates, mixing parameters) to TensorBoard each epoch."),
    option("--resume-from", type=click.Path(), default=FIT.resume_from, section="Training",
           help="last_model.pt or best_model.pt (or a checkpoint directory written with --fsdp-sharded-checkpoint) "
                "to resume (model, optimizer, scheduler, epoch, RNG, best); a step checkpoint continues "
                "mid-epoch exactly."),
    option("--checkpoint-every-steps", type=click.IntRange(min=1), default=FIT.checkpoint_every_steps, section="Training",
           help="Also write checkpoints/last_model.pt every N optimizer steps (atomic; the last one is kept), so "
                "a preempted or crashed run loses at most N steps. SIGTERM, SIGUSR1 (Slurm --signal) and "
                "Ctrl-C always write one before stopping and print the --resume-from line."),
    option("--progress-interval", type=click.FloatRange(min=0), default=FIT.progress_interval, section="Training",
           help="Seconds between progress lines (batch, step, samples/s, loss, ETA) in the log when stderr is "
                "not a terminal, as on a cluster; 0 logs every batch."),
    option("--val-every-steps", type=click.IntRange(min=1), default=FIT.val_every_steps, section="Training",
           help="Also validate every N optimizer steps, on a fixed subsample of the validation samples "
                "(--val-subsample), and log it (log line, TensorBoard val_step/*): for long epochs of a large "
                "corpus. The best checkpoint and early stopping still follow the full validation at epoch end."),
    option("--val-subsample", type=click.IntRange(min=1), default=FIT.val_subsample, section="Training",
           help="Validation samples scored every --val-every-steps (the same ones each time, drawn once "
                "with --seed); all of them when fewer."),
    option("--auto-batch-size/--no-auto-batch-size", default=FIT.auto_batch_size, section="Training",
           help="One CUDA GPU: measure training steps on the widest samples and use the largest even batch "
                "(2-256) that fits in --max-memory-fraction (changed: off by default)."),
    option("--max-memory-fraction", type=float, default=FIT.max_memory_fraction, section="Training",
           help="GPU memory fraction the batch-size search may use, optimizer state included."),
    option("--target-effective-batch-size", type=int, default=FIT.target_effective_batch_size, section="Training",
           help="With --auto-batch-size: accumulate gradients to reach at least this effective batch."),
]

ATTN_IMPLEMENTATION = option(
    "--attn-implementation", type=click.Choice(ATTENTION_IMPLEMENTATIONS), default=FIT.attn_implementation,
    section="Performance",
    help="Attention kernels to prefer on CUDA, each falling back to the next and finally to math (flash takes "
         "no padding mask, so padded batches use mem_efficient). A run-time choice: checkpoints do not record "
         "it, so any model runs on any GPU. sdpa lets PyTorch choose (changed: was mem_efficient).")

PERFORMANCE_OPTIONS = [
    option("--mixed-precision", type=click.Choice(["none" if p == "fp32" else p for p in PRECISIONS]), default=FIT.mixed_precision, section="Performance",
           help="Automatic mixed precision (fp16 uses a gradient scaler; bf16 also on CPU)."),
    option("--compile-model", is_flag=True, default=FIT.compile_model, section="Performance",
           help="torch.compile the model (inductor, dynamic shapes). Compiling took 2-2.5 min for the first batch "
                "shape on an H200, and new shapes recompile: worth it only for long runs (BENCHMARKS.md)."),
    option("--tf32/--no-tf32", default=FIT.tf32, section="Performance",
           help="TF32 matmuls on CUDA GPUs that have them (Ampere and later): about a third faster than fp32 on an "
                "H200 (BENCHMARKS.md), 10-bit mantissa inputs with fp32 accumulation; no effect on CPU or in "
                "bf16/fp16 autocast regions (changed: default on, was off; --no-tf32 keeps strict fp32)."),
    option("--gradient-checkpointing/--no-gradient-checkpointing", default=FIT.gradient_checkpointing, section="Performance",
           help="Recompute each transformer block in backward to save memory (changed: off by default, was on: "
                "it costs one more forward pass of every block, and CPU and small-batch runs do not need the memory; "
                "for large batches prefer --asv-chunk-size, see README)."),
    ATTN_IMPLEMENTATION,
    option("--asv-chunk-size", type=click.IntRange(min=0), default=FIT.asv_chunk_size, section="Performance",
           help="Encode the batch's distinct ASVs this many at a time, each chunk recomputed in backward "
                "(activation checkpointing), so training memory stays flat in distinct ASVs; see README, "
                "GPU memory. 0 or unset: off (changed: default off, was 256, which saved no memory there; "
                "256 is a good value on a GPU with large batches)."),
    option("--use-expandable-segments", is_flag=True, default=FIT.use_expandable_segments, section="Performance",
           help="Set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True."),
    option("--memory-profile", is_flag=True, default=FIT.memory_profile, section="Performance",
           help="Log peak memory each epoch (CUDA allocated and process RSS) to training.log and TensorBoard, "
                "and the memory after the model moves to the device."),
    DEVICE,
]

DISTRIBUTED_OPTIONS = [
    option("--distributed", is_flag=True, default=FIT.distributed, section="Distributed",
           help="DistributedDataParallel; launch with torchrun (nccl on GPU, gloo on CPU)."),
    option("--data-parallel", is_flag=True, default=FIT.data_parallel, section="Distributed",
           help="Single-process DataParallel over all visible CUDA GPUs, batches split per sample; needs CUDA "
                "(on CPU or for one process per GPU use --distributed)."),
    option("--fsdp", is_flag=True, default=FIT.fsdp, section="Distributed",
           help="Fully sharded data parallel (FSDP2, FULL_SHARD: every transformer block sharded over ranks); "
                "launch with torchrun (nccl on GPU, gloo on CPU). Checkpoints are gathered to rank 0 as one file "
                "unless --fsdp-sharded-checkpoint."),
    option("--fsdp-sharded-checkpoint", is_flag=True, default=FIT.fsdp_sharded_checkpoint, section="Distributed",
           help="With --fsdp: each rank writes its shards into a checkpoint directory (checkpoints/best_model/, "
                "pretrained_encoder/) instead of one gathered file; aam predict --model, --pretrained-encoder and "
                "--resume-from accept the directory."),
    option("--sync-batchnorm", is_flag=True, default=FIT.sync_batchnorm, section="Distributed",
           help="Accepted for compatibility (the model has no BatchNorm)."),
]
