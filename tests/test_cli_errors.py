"""Bad input: one line naming the file, row or flag, exit code 2, no traceback, no partial output."""

from __future__ import annotations

import json

import biom
import numpy as np
import pytest
from click.testing import CliRunner

from aam.cli import cli

TINY = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "16",
        "--batch-size", "8", "--epochs", "1", "--device", "cpu", "--quiet", "--seed", "1"]


def fails(*args, expect: str):
    """Run the CLI, check exit code 2, a single 'aam: error:' line mentioning ``expect``, no traceback."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert errors, result.output
    assert expect in errors[-1], errors[-1]
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    return errors[-1]


def train_args(synthetic_dir, out, *extra):
    return ["train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
            "--metadata-column", "target", "--output-dir", out, *TINY, *extra]


def test_missing_table(tmp_path):
    fails("pretrain", "--table", tmp_path / "nope.biom", "--tree", tmp_path / "t.nwk",
          "--output-dir", tmp_path / "out", *TINY, expect="nope.biom")
    assert not (tmp_path / "out").exists()


def test_unreadable_biom(tmp_path, synthetic_dir):
    bad = tmp_path / "bad.biom"
    bad.write_text("not a table")
    fails("train", "--table", bad, "--metadata", synthetic_dir["metadata"], "--metadata-column", "target",
          "--output-dir", tmp_path / "out", *TINY, expect="bad.biom")
    assert not (tmp_path / "out").exists()


def test_hashed_ids_without_fasta(synthetic_dir, tmp_path):
    line = fails("train", "--table", synthetic_dir["table_hashed"], "--metadata", synthetic_dir["metadata"],
                 "--metadata-column", "target", "--output-dir", tmp_path / "out", *TINY, expect="--sequences")
    assert "not DNA" in line
    assert not (tmp_path / "out").exists()


def test_hashed_ids_with_fasta_train(synthetic_dir, tmp_path):
    args = train_args(synthetic_dir, tmp_path / "out", "--sequences", synthetic_dir["sequences"])
    args[args.index("--table") + 1] = synthetic_dir["table_hashed"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def test_missing_target_column(synthetic_dir, tmp_path):
    fails("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
          "--metadata-column", "height", "--output-dir", tmp_path / "out", *TINY, expect="height")
    assert not (tmp_path / "out").exists()


def test_non_numeric_regression_target(synthetic_dir, tmp_path):
    fails("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
          "--metadata-column", "site", "--output-dir", tmp_path / "out", *TINY, expect="not numeric")


def test_metadata_without_id_column(synthetic_dir, tmp_path):
    metadata = tmp_path / "meta.tsv"
    metadata.write_text("name\ttarget\nS001\t3\n")
    args = train_args(synthetic_dir, tmp_path / "out")
    args[args.index("--metadata") + 1] = metadata
    fails(*args, expect="no sample id column")


def _train_args_with_target(synthetic_dir, tmp_path, value: str) -> list:
    """``train_args`` over a copy of the metadata whose ``target`` is ``value`` in every row."""
    metadata = tmp_path / "meta.tsv"
    lines = synthetic_dir["metadata"].read_text().splitlines()
    header = lines[0].split("\t")
    column = header.index("target")
    rows = [line.split("\t") for line in lines[1:]]
    for row in rows:
        row[column] = value
    metadata.write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n")
    args = train_args(synthetic_dir, tmp_path / "out")
    args[args.index("--metadata") + 1] = metadata
    return args


def test_nan_targets_are_dropped_and_all_nan_is_an_error(synthetic_dir, tmp_path):
    fails(*_train_args_with_target(synthetic_dir, tmp_path, "NaN"), expect="no finite value")


def test_heads_must_divide_width(synthetic_dir, tmp_path):
    args = train_args(synthetic_dir, tmp_path / "out")
    args[args.index("--attention-heads") + 1] = "3"
    fails(*args, expect="--attention-heads")


def test_exclusive_parallel_flags(synthetic_dir, tmp_path):
    fails(*train_args(synthetic_dir, tmp_path / "out", "--distributed", "--data-parallel"), expect="--data-parallel")


def test_ema_with_fsdp_is_refused(synthetic_dir, tmp_path):
    fails(*train_args(synthetic_dir, tmp_path / "out", "--fsdp", "--ema-decay", "0.99"), expect="--ema-decay")


def test_kmer_size_out_of_range(synthetic_dir, tmp_path):
    fails(*train_args(synthetic_dir, tmp_path / "out", "--kmer-size", "9"), expect="--kmer-size")


def test_test_size_leaving_empty_split(synthetic_dir, tmp_path):
    fails(*train_args(synthetic_dir, tmp_path / "out", "--test-size", "0.999"), expect="--test-size")
    assert not (tmp_path / "out").exists()


def test_quantiles_without_quantile_loss(synthetic_dir, tmp_path):
    fails(*train_args(synthetic_dir, tmp_path / "out", "--quantiles", "0.1,0.9"), expect="--quantiles")


def test_distance_matrix_with_missing_ids(synthetic_dir, tmp_path):
    matrix = tmp_path / "d.tsv"
    ids = ["x1", "x2"]
    matrix.write_text("\t" + "\t".join(ids) + "\nx1\t0\t0.5\nx2\t0.5\t0\n")
    fails("pretrain", "--table", synthetic_dir["table"], "--unifrac-matrix", matrix, "--output-dir",
          tmp_path / "out", *TINY, expect="d.tsv")


def test_asymmetric_distance_matrix(synthetic_dir, tmp_path):
    table = biom.load_table(str(synthetic_dir["table"]))
    ids = list(table.ids())
    values = np.random.default_rng(0).random((len(ids), len(ids)))
    np.fill_diagonal(values, 0)
    matrix = tmp_path / "d.npy"
    np.save(matrix, values)
    fails("pretrain", "--table", synthetic_dir["table"], "--unifrac-matrix", matrix, "--output-dir",
          tmp_path / "out", *TINY, expect="d.npy")


def test_corrupt_checkpoint(synthetic_dir, tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"garbage")
    fails("predict", "--model", checkpoint, "--table", synthetic_dir["table"], "--output", tmp_path / "p.tsv",
          expect="model.pt")
    assert not (tmp_path / "p.tsv").exists()


def test_unknown_option_in_config_file(synthetic_dir, tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"embedding-dimension": 8}))
    fails("train", "--config", config, *train_args(synthetic_dir, tmp_path / "out")[1:], expect="embedding-dimension")


def test_new_run_refuses_a_used_output_dir(synthetic_dir, tmp_path):
    out = tmp_path / "out"
    first = CliRunner().invoke(cli, [str(a) for a in train_args(synthetic_dir, out)])
    assert first.exit_code == 0, first.output
    fails(*train_args(synthetic_dir, out), expect="--resume-from")


def test_not_built_commands_do_not_pretend():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("unifrac", "pretrain", "train", "predict", "embed", "inspect", "rf-baseline", "cross-validate",
                 "demo"):
        assert name in result.output


@pytest.mark.parametrize("command", ["pretrain", "train", "predict", "embed", "inspect", "unifrac", "rf-baseline",
                                     "cross-validate", "demo"])
def test_help_of_every_command(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and "options:" in result.output.lower()


@pytest.mark.parametrize("module", ["aam", "aam.cli"])
def test_python_dash_m_runs_the_cli(module):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("aam"), result.stderr


def test_constant_regression_target_is_an_error(synthetic_dir, tmp_path):
    line = fails(*_train_args_with_target(synthetic_dir, tmp_path, "7"), expect="--metadata-column")
    assert "one value (7)" in line and "nothing to learn" in line
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_several_validation_passes_are_refused_with_the_alternative(synthetic_dir, tmp_path):
    line = fails(*train_args(synthetic_dir, tmp_path / "out", "--val-prediction-passes", "3"),
                 expect="--val-prediction-passes")
    assert "--prediction-passes" in line


def test_asv_chunk_size_zero_means_off_as_in_the_reference(synthetic_dir, tmp_path):
    result = CliRunner().invoke(cli, [str(a) for a in train_args(synthetic_dir, tmp_path / "out",
                                                                 "--asv-chunk-size", "0")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_config"]["encoder"]["asv_chunk_size"] is None


def test_resuming_a_finished_run_says_so_and_keeps_its_best_model(synthetic_dir, tmp_path):
    out = tmp_path / "out"
    args = [str(a) for a in train_args(synthetic_dir, out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    best = (out / "checkpoints" / "best_model.pt").stat().st_mtime_ns
    result = CliRunner().invoke(cli, [*args, "--resume-from", str(out / "checkpoints" / "last_model.pt")])
    assert result.exit_code == 0, result.output
    log_text = (out / "training.log").read_text()
    assert "training had already finished: best epoch 1" in log_text and "no epoch produced" not in log_text
    assert (out / "checkpoints" / "best_model.pt").stat().st_mtime_ns == best


@pytest.mark.parametrize("flags", [["--bounded-targets"], ["--output-constraint", "nonnegative"],
                                   ["--output-activation", "relu"]])
def test_output_constraints_that_mean_something_else_after_zscore_are_refused(synthetic_dir, tmp_path, flags):
    line = fails(*train_args(synthetic_dir, tmp_path / "out", *flags), expect="--output-constraint")
    assert "--target-transform zscore" in line and "training mean" in line


def test_bounded_output_with_minmax_trains(synthetic_dir, tmp_path):
    args = train_args(synthetic_dir, tmp_path / "out", "--output-constraint", "bounded", "--target-transform",
                      "minmax")
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("config", "expect"), [("{0: mae}", "not JSON"), ('{"0": "mae", "1": "mse"}', "one entry"),
                                                ('{"0": "quantile"}', "not one of"), ('{"age": "mae"}', "no output")])
def test_bad_loss_config_is_one_line(synthetic_dir, tmp_path, config, expect):
    line = fails(*train_args(synthetic_dir, tmp_path / "out", "--loss-config", config), expect="--loss-config")
    assert expect in line


@pytest.mark.parametrize("key", ["0", "target"])
def test_loss_config_of_the_reference_sets_the_loss(synthetic_dir, tmp_path, key):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(a) for a in train_args(synthetic_dir, out, "--loss-config",
                                                                 json.dumps({key: "mae"}))])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["options"]["loss_type"] == "mae"
