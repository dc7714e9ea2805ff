"""A corpus joined on disk (``aam pretrain --on-disk DIR``): the memory-mapped arrays equal the in-memory
union's (HDF5 read in blocks of samples, a JSON table, hashed ids with a FASTA, two ids of one sequence), the
folder is reused while the tables are unchanged and rebuilt when one changes, and pretraining on it trains the
same weights as in memory."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import biom
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aam.cli import cli
from aam.data.disk_union import build_disk_union
from aam.data.synthetic import make_synthetic_dataset, write_biom, write_synthetic_dataset
from aam.data.table_union import TableSource, load_union


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four tables cut from one synthetic table: HDF5, HDF5 with hashed ids (a FASTA), HDF5 whose first two
    features name one sequence, and BIOM 1.0 JSON."""
    folder = tmp_path_factory.mktemp("disk_corpus")
    dataset = make_synthetic_dataset(n_samples=70, n_asvs=40, seed=8)
    paths = write_synthetic_dataset(folder, dataset)
    ids = dataset.metadata["sample_id"].tolist()
    sources = []
    for k, rows in enumerate((range(0, 23), range(23, 41), range(41, 55), range(55, 70))):
        counts = dataset.counts[list(rows)]
        used = np.flatnonzero(counts.sum(0) > 0)
        names = [dataset.sequences[j] for j in used]
        fasta = None
        if k == 1:
            hashed = [hashlib.md5(s.encode()).hexdigest() for s in names]
            fasta = folder / "part1.fasta"
            fasta.write_text("".join(f">{h}\n{s}\n" for h, s in zip(hashed, names)))
            names = hashed
        if k == 2:  # two ids, one sequence: their reads share a column
            fasta = folder / "part2.fasta"
            names = [f"f{j}" for j in range(len(used))]
            sequences = [dataset.sequences[j] for j in used]
            sequences[1] = sequences[0]
            shared = sequences[0]
            fasta.write_text("".join(f">{n}\n{s}\n" for n, s in zip(names, sequences)))
        path = folder / (f"part{k}.json" if k == 3 else f"part{k}.biom")
        if k == 3:
            table = biom.Table(counts[:, used].T.astype(float), observation_ids=names,
                               sample_ids=[ids[r] for r in rows])
            path.write_text(table.to_json("aam test"))
        else:
            write_biom(path, counts[:, used], names, [ids[r] for r in rows])
        sources.append(TableSource(str(path), None if fasta is None else str(fasta)))
    return {"folder": folder, "paths": paths, "sources": sources, "ids": ids, "shared_sequence": shared}


def test_the_disk_union_equals_the_union_in_memory(corpus, tmp_path):
    memory = load_union(corpus["sources"], max_bp=40)
    disk = build_disk_union(corpus["sources"], tmp_path / "union", max_bp=40, block_samples=4)
    a, b = memory.data, disk.data
    assert b.sample_ids == a.sample_ids and b.asv_ids == a.asv_ids and b.sequences == a.sequences
    np.testing.assert_array_equal(b.tokens, a.tokens)
    np.testing.assert_array_equal(disk.source_of_sample, memory.source_of_sample)
    np.testing.assert_array_equal(b.counts.indptr, a.counts.indptr)
    np.testing.assert_array_equal(b.counts.indices, a.counts.indices)
    np.testing.assert_array_equal(b.counts.data, a.counts.data)
    for row in range(a.n_samples):
        for mine, theirs in zip(b.by_abundance(row), a.by_abundance(row)):
            np.testing.assert_array_equal(mine, theirs)
            assert mine.dtype == theirs.dtype
    assert isinstance(b.counts.data, np.memmap) and isinstance(b._abundance_asvs, np.memmap)
    # the third table's ids f0 and f1 name one sequence: its column holds both ids' reads
    table = biom.load_table(corpus["sources"][2].table)
    column = b.sequences.index(corpus["shared_sequence"])
    for sample in table.ids():
        expected = table.get_value_by_ids("f0", sample) + table.get_value_by_ids("f1", sample)
        assert b.counts[b.rows_of([sample])[0], column] == pytest.approx(expected)


def test_the_folder_is_reused_until_a_table_changes(corpus, tmp_path, caplog):
    folder = tmp_path / "union"
    build_disk_union(corpus["sources"], folder, max_bp=40)
    stamp = (folder / "indices.npy").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="aam"):
        again = build_disk_union(corpus["sources"], folder, max_bp=40)
    assert "reusing the corpus arrays" in caplog.text and (folder / "indices.npy").stat().st_mtime_ns == stamp
    assert again.data.n_samples == 70
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aam"):
        shorter = build_disk_union(corpus["sources"], folder, max_bp=30)  # another setting: rebuilt
    assert "rebuilding" in caplog.text and shorter.data.tokens.shape[1] == 31
    first = corpus["sources"][0].table
    os.utime(first, ns=(os.stat(first).st_atime_ns, os.stat(first).st_mtime_ns + 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aam"):
        build_disk_union(corpus["sources"], folder, max_bp=30)
    assert "rebuilding" in caplog.text
    assert json.loads((folder / "union.json").read_text())["nnz"] == int(again.data.counts.nnz)


def _pretrain(corpus, out, *extra):
    manifest = corpus["folder"] / "manifest.tsv"
    manifest.write_text("table\tsequences\n" + "".join(f"{s.table}\t{s.sequences or ''}\n"
                                                      for s in corpus["sources"]))
    return CliRunner().invoke(cli, [str(a) for a in [
        "pretrain", "--tables", manifest, "--tree", corpus["paths"]["tree"], "--output-dir", out,
        "--epochs", 2, "--batch-size", 8, "--embedding-dim", 16, "--attention-heads", 2, "--attention-layers", 1,
        "--token-limit", 32, "--max-bp", 40, "--device", "cpu", "--seed", 4, "--quiet", *extra]])


def test_pretraining_on_disk_trains_the_same_weights(corpus, tmp_path):
    memory = _pretrain(corpus, tmp_path / "memory")
    disk = _pretrain(corpus, tmp_path / "disk", "--on-disk", tmp_path / "arrays")
    assert memory.exit_code == 0, memory.output
    assert disk.exit_code == 0, disk.output
    assert (tmp_path / "arrays" / "union.json").is_file()
    a = torch.load(tmp_path / "memory" / "checkpoints" / "last_model.pt", weights_only=False)
    b = torch.load(tmp_path / "disk" / "checkpoints" / "last_model.pt", weights_only=False)
    for key, value in a["model_state"].items():
        torch.testing.assert_close(b["model_state"][key], value, rtol=0, atol=0)
    for mine, theirs in zip(b["training_state"]["history"], a["training_state"]["history"], strict=True):
        assert mine["train_loss"] == theirs["train_loss"] and mine["val_loss"] == theirs["val_loss"]


def test_on_disk_refuses_rarefaction(corpus, tmp_path):
    result = _pretrain(corpus, tmp_path / "run", "--on-disk", tmp_path / "arrays", "--rarefy-depth", 100)
    assert result.exit_code == 2
    assert "--rarefy-depth is not supported with --on-disk" in result.output
