"""``aam demo``: synthetic data, then unifrac -> pretrain -> train -> predict -> rf-baseline -> embed ->
explain -> inspect -> cross-validate, end to end; it ends by printing where the reports are."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click
import pandas as pd

from aam.cli import options as o
from aam.errors import AamError

# Small enough for a laptop CPU in a few minutes; the same flags scale up on real data.
MODEL_FLAGS = ["--embedding-dim", "32", "--attention-heads", "4", "--attention-layers", "2", "--max-bp", "150",
               "--token-limit", "64", "--batch-size", "16"]


def _run(name: str, args: list[str]) -> None:
    """Run ``aam <name> <args>`` in-process, echoing the equivalent command line."""
    from aam.cli import cli

    click.secho(f"\n$ aam {name} {shlex.join(args)}", fg="cyan", err=True)
    exit_code = cli.main(args=[name, *args], prog_name="aam", standalone_mode=False)
    if isinstance(exit_code, int) and exit_code != 0:
        raise AamError(f"the demo step 'aam {name}' failed", hint="see the message above")


@click.command("demo", cls=o.SectionedCommand)
@o.apply([
    o.option("--output-dir", type=click.Path(file_okay=False), required=True, section="Output",
             help="Folder for data/, unifrac, pretrain/, train/, predictions.tsv, rf_baseline.tsv, "
                  "embeddings.tsv/.png, explain/ and cross_validate/ (each with its report.html)."),
    o.option("--data-only", is_flag=True, default=o.DEMO.data_only, section="Output",
             help="Only write the synthetic dataset to OUTPUT_DIR/data."),
    o.option("--samples", type=int, default=o.DEMO.samples, section="Input", help="Synthetic samples."),
    o.option("--asvs", type=int, default=o.DEMO.asvs, section="Input", help="Synthetic ASVs."),
    o.option("--pretrain-epochs", type=int, default=o.DEMO.pretrain_epochs, section="Training",
             help="Pretraining epochs."),
    o.option("--train-epochs", type=int, default=o.DEMO.train_epochs, section="Training", help="Fine-tuning epochs."),
    o.SEED,
])
def command(output_dir: str, data_only: bool, samples: int, asvs: int, pretrain_epochs: int, train_epochs: int,
            seed: int | None) -> None:
    """Make a small synthetic dataset (ASV sequences evolved along a random tree, counts, metadata with a
    numeric target and a categorical column) and run the whole pipeline on it."""
    from aam.data.synthetic import write_synthetic_dataset
    from aam.workflows.run_config import DemoRun

    run = DemoRun(output_dir=output_dir, data_only=data_only, samples=samples, asvs=asvs,
                  pretrain_epochs=pretrain_epochs, train_epochs=train_epochs, seed=seed)
    seed = 0 if run.seed is None else run.seed
    samples, asvs, pretrain_epochs, train_epochs = run.samples, run.asvs, run.pretrain_epochs, run.train_epochs
    out = Path(run.output_dir)
    started = time.perf_counter()
    paths = write_synthetic_dataset(out, n_samples=samples, n_asvs=asvs, seed=seed)
    click.echo(f"synthetic data ({samples} samples, {asvs} ASVs) in {out / 'data'}", err=True)
    if run.data_only:
        return
    data = out / "data"
    common = ["--table", str(paths["table"]), "--seed", str(seed), *MODEL_FLAGS]
    _run("unifrac", ["--table", str(paths["table"]), "--tree", str(paths["tree"]), "--metric", "unweighted",
                     "--output", str(data / "unifrac.h5")])
    _run("pretrain", [*common, "--unifrac-matrix", str(data / "unifrac.h5"), "--output-dir", str(out / "pretrain"),
                      "--epochs", str(pretrain_epochs), "--lr", "1e-3", "--patience", "20", "--count-embedding"])
    _run("train", [*common, "--metadata", str(paths["metadata"]), "--metadata-column", "target",
                   "--categorical-columns", "site", "--categorical-fusion", "cross-attention",
                   "--count-embedding", "--pretrained-encoder", str(out / "pretrain" / "pretrained_encoder.pt"),
                   "--output-dir", str(out / "train"), "--epochs", str(train_epochs), "--lr", "1e-3",
                   "--loss-type", "mse", "--patience", "15"])
    _run("predict", ["--model", str(out / "train" / "checkpoints" / "best_model.pt"), "--table", str(paths["table"]),
                     "--metadata", str(paths["metadata"]), "--output", str(out / "predictions.tsv")])
    _run("rf-baseline", ["--table", str(paths["table"]), "--metadata", str(paths["metadata"]),
                         "--metadata-column", "target", "--train-samples", str(out / "train" / "train_samples.txt"),
                         "--val-samples", str(out / "train" / "val_samples.txt"), "--output",
                         str(out / "rf_baseline.tsv"), "--n-estimators", "300"])
    _run("embed", ["--model", str(out / "pretrain" / "pretrained_encoder.pt"), "--table", str(paths["table"]),
                   "--output", str(out / "embeddings.tsv"), "--plot", str(out / "embeddings.png"), "--metadata",
                   str(paths["metadata"]), "--color-by", "site"])
    _run("explain", ["--model", str(out / "train" / "checkpoints" / "best_model.pt"), "--table",
                     str(paths["table"]), "--metadata", str(paths["metadata"]), "--output-dir", str(out / "explain")])
    _run("inspect", [str(out / "train" / "checkpoints" / "best_model.pt")])
    _run("cross-validate", ["--table", str(paths["table"]), "--metadata", str(paths["metadata"]),
                            "--metadata-column", "target", "--model-type", "sequence-groups", "--n-folds", "5",
                            "--rf-n-estimators", "300", "--seed", str(seed), "--output-dir",
                            str(out / "cross_validate")])
    _summary(out, time.perf_counter() - started)


def _summary(out: Path, seconds: float) -> None:
    import torch

    from aam.objectives.metrics import RegressionMetrics

    def scores(path: Path) -> dict[str, float]:
        frame = pd.read_csv(path, sep="\t")
        metrics = RegressionMetrics()
        metrics.update(torch.tensor(frame["prediction"].to_numpy(float)), torch.tensor(frame["actual"].to_numpy(float)))
        return metrics.compute()

    aam, forest = scores(out / "train" / "val_predictions.tsv"), scores(out / "rf_baseline.tsv")
    click.echo(f"\ndemo finished in {seconds / 60:.1f} min", err=True)
    click.echo(f"  predictions      {out / 'predictions.tsv'}", err=True)
    click.echo(f"  plots            {out / 'train' / 'plots'}, {out / 'embeddings.png'}", err=True)
    click.echo(f"  ASV attributions {out / 'explain' / 'asv_importance.tsv'}", err=True)
    click.echo(f"  TensorBoard      tensorboard --logdir {out}", err=True)
    click.echo("  validation       MAE      R^2", err=True)
    click.echo(f"  AAM              {aam['mae']:<8.3f} {aam['r2']:.3f}", err=True)
    click.echo(f"  random forest    {forest['mae']:<8.3f} {forest['r2']:.3f}", err=True)
    click.echo("  reports (open in a browser, offline):", err=True)
    for name in ("cross_validate", "train", "explain"):
        click.echo(f"    {out / name / 'report.html'}", err=True)
