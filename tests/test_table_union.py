"""A pretraining corpus of several tables joined by sequence (``aam pretrain --tables/--val-tables``): the union
holds every sample's reads under the same sequences as its own table, hashed ids resolve through their FASTA,
repeated sample ids are an error naming both tables (or are prefixed), manifests are checked line by line,
weighted tables are drawn in proportion, and the CLI validates on whole held-out tables."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aam.cli import cli
from aam.data.biom_table import load_table, table_to_csr
from aam.data.dataset import EpochShuffleSampler
from aam.data.synthetic import make_synthetic_dataset, write_biom, write_synthetic_dataset
from aam.data.table_union import TableSource, load_union, read_manifest
from aam.errors import AamError
from aam.unifrac import UniFracEngine, load_tree


def reads_by_sequence(data, sample: str) -> dict[str, float]:
    row = data.counts[data.rows_of([sample])[0]]
    sequences = data.sequences or data.asv_ids
    return {sequences[j]: float(v) for j, v in zip(row.indices, row.data)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The synthetic table cut into three tables by samples (each keeping only its observed ASVs), the second
    with hashed ids and a FASTA; and the whole table for reference."""
    folder = tmp_path_factory.mktemp("corpus")
    dataset = make_synthetic_dataset(n_samples=60, n_asvs=40, seed=5)
    paths = write_synthetic_dataset(folder, dataset)
    ids = dataset.metadata["sample_id"].tolist()
    parts = {}
    for k, rows in enumerate((range(0, 25), range(25, 45), range(45, 60))):
        counts = dataset.counts[list(rows)]
        used = np.flatnonzero(counts.sum(0) > 0)
        names = [dataset.sequences[j] for j in used]
        if k == 1:
            hashed = [hashlib.md5(s.encode()).hexdigest() for s in names]
            (folder / "part1.fasta").write_text("".join(f">{h}\n{s}\n" for h, s in zip(hashed, names)))
            names = hashed
        write_biom(folder / f"part{k}.biom", counts[:, used], names, [ids[r] for r in rows])
        parts[k] = folder / f"part{k}.biom"
    return {"folder": folder, "paths": paths, "parts": parts, "ids": ids, "dataset": dataset}


def test_the_union_keeps_every_read_under_its_sequence(corpus):
    parts, folder = corpus["parts"], corpus["folder"]
    union = load_union([TableSource(str(parts[0])), TableSource(str(parts[1]), str(folder / "part1.fasta")),
                        TableSource(str(parts[2]))], max_bp=150)
    whole = table_to_csr(load_table(corpus["paths"]["table"]))
    assert union.data.sample_ids == whole.sample_ids
    observed = set(whole.feature_ids)  # the whole table's observed ASVs, ids = sequences
    assert set(union.data.sequences) == observed and len(union.data.sequences) == len(observed)  # once each
    np.testing.assert_array_equal(union.source_of_sample, np.repeat([0, 1, 2], [25, 20, 15]))
    dense = whole.counts.toarray()
    for i, sample in enumerate(whole.sample_ids):
        expected = {s: float(v) for s, v in zip(whole.feature_ids, dense[i]) if v}
        assert reads_by_sequence(union.data, sample) == expected
    hashed_only = set(table_to_csr(load_table(parts[1])).feature_ids)
    first_ids = dict(zip(union.data.sequences, union.data.asv_ids))
    assert all(first_ids[s] == s for s in table_to_csr(load_table(parts[0])).feature_ids)  # first id seen
    hashed_first = load_union([TableSource(str(parts[1]), str(folder / "part1.fasta")),
                               TableSource(str(parts[0]))], max_bp=150).data
    assert set(hashed_first.asv_ids[:len(hashed_only)]) == hashed_only  # a hashed table first names its ASVs
    assert union.data.tokens.shape[0] == len(observed)


def test_unifrac_of_the_union_equals_the_whole_table(corpus):
    parts, folder = corpus["parts"], corpus["folder"]
    union = load_union([TableSource(str(parts[0])), TableSource(str(parts[1]), str(folder / "part1.fasta")),
                        TableSource(str(parts[2]))], max_bp=150).data
    whole = table_to_csr(load_table(corpus["paths"]["table"]))
    tree = load_tree(corpus["paths"]["tree"])
    joined = UniFracEngine(tree, union.sequences).prepare(union.counts, "unweighted").batch(np.arange(60))
    reference = UniFracEngine(tree, whole.feature_ids).prepare(whole.counts, "unweighted").batch(np.arange(60))
    np.testing.assert_allclose(joined, reference, atol=1e-6)


def test_a_repeated_sample_id_names_both_tables_unless_prefixed(corpus, tmp_path):
    dataset, ids = corpus["dataset"], corpus["ids"]
    copy = tmp_path / "again.biom"
    write_biom(copy, dataset.counts[:5], dataset.sequences, ids[:5])
    sources = [TableSource(str(corpus["parts"][0])), TableSource(str(copy))]
    with pytest.raises(AamError) as err:
        load_union(sources, max_bp=150)
    assert "part0.biom" in str(err.value) and "again.biom" in str(err.value) and "--prefix-sample-ids" in str(err.value)
    union = load_union(sources, max_bp=150, prefix_sample_ids=True)
    assert union.data.sample_ids[:2] == [f"part0:{ids[0]}", f"part0:{ids[1]}"]
    assert union.data.sample_ids[-1] == f"again:{ids[4]}"
    twin = tmp_path / "other" / "part0.biom"  # the same file name in another folder
    twin.parent.mkdir()
    write_biom(twin, dataset.counts[:3], dataset.sequences, ids[:3])
    both = load_union([TableSource(str(corpus["parts"][0])), TableSource(str(twin))], max_bp=150,
                      prefix_sample_ids=True).data.sample_ids
    assert both[0] == f"{corpus['folder'].name}/part0:{ids[0]}" and both[-1] == f"other/part0:{ids[2]}"
    with pytest.raises(AamError, match="listed twice"):
        load_union([TableSource(str(copy)), TableSource(str(copy))], max_bp=150)


def test_manifest_paths_weights_and_errors_by_line(corpus, tmp_path):
    folder = corpus["folder"]
    manifest = folder / "corpus.tsv"
    manifest.write_text("table\tsequences\tweight\npart0.biom\t\t\npart1.biom\tpart1.fasta\t2.5\n")
    sources = read_manifest(manifest)
    assert sources == [TableSource(str(folder / "part0.biom"), None, 1.0),
                       TableSource(str(folder / "part1.biom"), str(folder / "part1.fasta"), 2.5)]
    bad = tmp_path / "bad.tsv"
    bad.write_text("table\tweight\na.biom\t1\nb.biom\t-1\n")
    with pytest.raises(AamError, match=r"line 3.*positive"):
        read_manifest(bad)
    bad.write_text("path\tweight\na.biom\t1\n")
    with pytest.raises(AamError, match="columns are path, weight"):
        read_manifest(bad)


def test_weighted_tables_are_drawn_in_proportion_and_epochs_repeat():
    weights = np.array([1.0] * 100 + [3.0] * 100)
    sampler = EpochShuffleSampler(200, seed=7, weights=weights)
    draws = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    assert len(draws) == 20 * 200
    heavy = np.mean(np.array(draws) >= 100)
    assert heavy == pytest.approx(0.75, abs=0.02)
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(3)
    sampler.skip(50)
    assert list(sampler) == first[50:]  # a run resumed mid-epoch sees the rest of the same draws
    plain = EpochShuffleSampler(200, seed=7, weights=np.ones(200))
    assert sorted(plain) == list(range(200))  # equal weights: the plain permutation, every sample once


def test_cli_pretrains_on_a_manifest_and_validates_on_a_whole_table(corpus, tmp_path):
    folder = corpus["folder"]
    manifest = folder / "train_tables.tsv"
    manifest.write_text("table\tsequences\tweight\npart0.biom\t\t1\npart1.biom\tpart1.fasta\t2\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "pretrain", "--tables", manifest, "--val-tables", corpus["parts"][2], "--tree", corpus["paths"]["tree"],
        "--output-dir", out, "--epochs", 2, "--batch-size", 8, "--embedding-dim", 16, "--attention-heads", 2,
        "--attention-layers", 1, "--token-limit", 32, "--max-bp", 40, "--device", "cpu", "--seed", 1, "--quiet",
        "--val-every-steps", 4, "--val-subsample", 5]])
    assert result.exit_code == 0, result.output
    # 5 full batches an epoch (pretraining leaves the partial one out): steps 4 and 8 validate on 5 of the
    # held-out table's samples (10 ends epoch 2)
    lines = [line for line in (out / "training.log").read_text().splitlines() if "validation subsample" in line]
    assert [line.split("step ")[1].split()[0] for line in lines] == ["4", "8"]
    assert all("val_distance_mae=" in line for line in lines)
    val = (out / "val_samples.txt").read_text().split()
    assert sorted(val) == sorted(corpus["ids"][45:])
    assert sorted((out / "train_samples.txt").read_text().split()) == sorted(corpus["ids"][:45])
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["tables"] == str(manifest) and options["table"] is None
    state = torch.load(out / "checkpoints" / "last_model.pt", weights_only=False)
    history = state["training_state"]["history"]
    assert state["training_state"]["global_step"] == 2 * 5  # 45 draws an epoch (weighted), 5 full batches of 8
    assert len(history) == 2 and all(np.isfinite(h["val_distance_mae"]) for h in history)  # UniFrac from the tree


def test_cli_needs_a_table_and_names_a_repeated_sample(corpus, tmp_path):
    result = CliRunner().invoke(cli, ["pretrain", "--tree", str(corpus["paths"]["tree"]), "--output-dir",
                                      str(tmp_path / "none")])
    assert result.exit_code == 2 and "--tables" in result.output and "Traceback" not in result.output
    manifest = tmp_path / "twice.tsv"
    manifest.write_text(f"table\n{corpus['paths']['table']}\n{corpus['parts'][0]}\n")
    result = CliRunner().invoke(cli, ["pretrain", "--tables", str(manifest), "--tree", str(corpus["paths"]["tree"]),
                                      "--output-dir", str(tmp_path / "dup"), "--device", "cpu"])
    assert result.exit_code == 2 and "part0.biom" in result.output and "table.biom" in result.output
    assert not (tmp_path / "dup" / "checkpoints").exists()


def test_weighted_draws_are_shared_out_over_ranks():
    """Under DDP/FSDP every rank draws the same weighted epoch and takes its share: equal lengths, together the
    single-process draw of ceil(n / W) * W items, repeatable per epoch, resumable mid-epoch."""
    weights = np.array([1.0] * 7 + [4.0] * 6)
    world = 3
    ranks = [EpochShuffleSampler(13, seed=5, weights=weights, rank=r, world_size=world) for r in range(world)]
    for sampler in ranks:
        sampler.set_epoch(2)
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [len(s) for s in ranks] == [5, 5, 5]
    interleaved = [shares[k % world][k // world] for k in range(15)]
    generator = torch.Generator().manual_seed((5 * 1_000_003 + 2) % (2**63))
    assert interleaved == torch.multinomial(torch.as_tensor(weights), 15, replacement=True,
                                            generator=generator).tolist()
    ranks[1].set_epoch(2)
    ranks[1].skip(2)
    assert list(ranks[1]) == shares[1][2:]
    with pytest.raises(ValueError, match="weighted"):
        EpochShuffleSampler(13, seed=5, rank=1, world_size=2)
