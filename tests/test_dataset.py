"""AmpliconData, SampleDataset, the batch collator and the loader, against plain per-sample loops."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from aam.data.dataset import (
    ASV_SAMPLERS,
    AmpliconData,
    Batch,
    BatchCollator,
    MatrixDistanceLookup,
    SampleDataset,
    asvs_in_groups,
    make_loader,
    thin_reads,
)
from aam.errors import AamError

N_SAMPLES, N_ASVS, MAX_BP = 30, 40, 12


def _tokens(rng: np.random.Generator, n: int, max_bp: int) -> np.ndarray:
    """START (6) then random nucleotides (1-4), PAD (0) after a random length; [n, max_bp + 1] uint8."""
    tokens = np.zeros((n, max_bp + 1), dtype=np.uint8)
    tokens[:, 0] = 6
    for i, length in enumerate(rng.integers(3, max_bp - 2, size=n)):  # never the full width
        tokens[i, 1:length + 1] = rng.integers(1, 5, size=length)
    return tokens


@pytest.fixture
def data() -> AmpliconData:
    rng = np.random.default_rng(0)
    dense = rng.integers(1, 6, size=(N_SAMPLES, N_ASVS)) * (rng.random((N_SAMPLES, N_ASVS)) < 0.4)
    dense[3] = 0  # an empty sample
    dense[4, :6] = [0, 7, 2, 7, 0, 9]  # ties: columns 1 and 3
    dense[4, 6:] = 0
    return AmpliconData(sp.csr_matrix(dense), _tokens(rng, N_ASVS, MAX_BP),
                        [f"s{i}" for i in range(N_SAMPLES)], [f"asv{j}" for j in range(N_ASVS)])


def _dense(data: AmpliconData) -> np.ndarray:
    return data.counts.toarray()


def test_abundance_order_with_ties_by_table_order(data):
    asvs, counts = data.by_abundance(4)
    np.testing.assert_array_equal(asvs, [5, 1, 3, 2])
    np.testing.assert_array_equal(counts, [9, 7, 7, 2])
    dense = _dense(data)
    for row in range(N_SAMPLES):  # against a per-sample stable sort
        nonzero = np.flatnonzero(dense[row])
        expected = nonzero[np.argsort(-dense[row, nonzero], kind="stable")]
        np.testing.assert_array_equal(data.by_abundance(row)[0], expected)
        np.testing.assert_array_equal(data.by_table_order(row)[0], nonzero)


def test_token_limit_and_strategies(data):
    dense = _dense(data)
    sizes = data.asvs_per_sample
    row = int(np.argmax(sizes))
    limit = int(sizes[row]) - 3
    by_rank = SampleDataset(data, [row], token_limit=limit, asv_sampling="abundance")[0]
    np.testing.assert_array_equal(by_rank["asv_index"], data.by_abundance(row)[0][:limit])
    np.testing.assert_array_equal(by_rank["counts"], dense[row, by_rank["asv_index"]])
    assert by_rank["sample_index"] == row
    first = SampleDataset(data, [row], token_limit=limit, asv_sampling="first")[0]
    np.testing.assert_array_equal(first["asv_index"], np.flatnonzero(dense[row])[:limit])

    random_ds = SampleDataset(data, [row], token_limit=limit, asv_sampling="random", seed=3)
    draw = random_ds[0]["asv_index"]
    assert len(draw) == limit and len(set(draw)) == limit and set(draw) <= set(np.flatnonzero(dense[row]))
    rank = {a: i for i, a in enumerate(data.by_abundance(row)[0])}
    assert [rank[a] for a in draw] == sorted(rank[a] for a in draw)  # kept in abundance order
    np.testing.assert_array_equal(random_ds[0]["asv_index"], draw)  # reproducible within an epoch
    draws = set()
    for epoch in range(10):
        random_ds.set_epoch(epoch)
        draws.add(tuple(random_ds[0]["asv_index"]))
    assert len(draws) > 1  # a new subset across epochs
    assert set(ASV_SAMPLERS) == {"abundance", "first", "random"}


def test_small_samples_are_kept_whole(data):
    ds = SampleDataset(data, token_limit=1024)
    for i in range(len(ds)):
        row = ds.indices[i]
        np.testing.assert_array_equal(ds[i]["asv_index"], data.by_abundance(row)[0])


def test_empty_samples_skipped_and_aligned(data):
    targets = np.arange(N_SAMPLES, dtype=np.float64) * 1.5
    categoricals = np.arange(2 * N_SAMPLES).reshape(N_SAMPLES, 2)
    ds = SampleDataset(data, np.arange(N_SAMPLES), targets=targets, categoricals=categoricals)
    assert ds.skipped_ids == ["s3"] and len(ds) == N_SAMPLES - 1
    assert "s3" not in ds.sample_ids
    item = ds[3]  # the sample after the skipped one
    assert item["sample_index"] == 4 and item["target"] == pytest.approx(6.0)
    assert item["target"].dtype == np.float32
    np.testing.assert_array_equal(item["categoricals"], [8, 9])
    classes = SampleDataset(data, [0, 1], targets=np.array([2, 0]))
    assert classes[0]["target"].dtype == np.int64


def test_dataset_errors(data):
    with pytest.raises(AamError, match="nonzero"):
        SampleDataset(data, [3])
    with pytest.raises(AamError) as err:
        SampleDataset(data, token_limit=0)
    assert err.value.source == "--token-limit"
    with pytest.raises(AamError) as err:
        SampleDataset(data, asv_sampling="best")
    assert err.value.source == "--asv-sampling"
    with pytest.raises(AamError, match="negative"):
        AmpliconData(sp.csr_matrix([[1.0, -1.0]]), np.zeros((2, 3), np.uint8), ["a"], ["x", "y"])


def test_subset(data):
    part = data.subset([4, 0])
    assert part.sample_ids == ["s4", "s0"] and part.tokens is data.tokens
    np.testing.assert_array_equal(part.by_abundance(0)[0], data.by_abundance(4)[0])
    np.testing.assert_array_equal(data.rows_of(["s4", "s0"]), [4, 0])
    with pytest.raises(AamError, match="nope"):
        data.rows_of(["nope"])


def test_collate_pads_to_longest_and_dedups(data):
    rng = np.random.default_rng(1)
    matrix = rng.random((N_SAMPLES, N_SAMPLES))
    matrix = (matrix + matrix.T) / 2
    ds = SampleDataset(data, targets=rng.normal(size=N_SAMPLES), categoricals=rng.integers(0, 3, (N_SAMPLES, 2)),
                       token_limit=8)
    items = [ds[i] for i in (0, 5, 2, 9)]
    collate = BatchCollator(data.tokens, data.sample_ids, MatrixDistanceLookup(matrix))
    batch = collate(items)
    lengths = [len(item["asv_index"]) for item in items]
    B, S = batch.asv_index.shape
    assert (B, S) == (4, max(lengths)) and len(batch) == 4
    assert batch.asv_index.dtype == torch.int64 and batch.tokens.dtype == torch.uint8  # compact for the copy to the device
    assert batch.asv_mask.dtype == torch.bool and batch.counts.dtype == torch.float32
    np.testing.assert_array_equal(batch.asv_mask.sum(1).numpy(), lengths)
    all_asvs = np.concatenate([item["asv_index"] for item in items])
    assert batch.tokens.shape[0] == len(np.unique(all_asvs))  # each distinct ASV once
    width = batch.tokens.shape[1]
    assert width < MAX_BP + 1 and torch.any(batch.tokens[:, -1] != 0)  # trimmed to the longest sequence
    for b, item in enumerate(items):  # per-slot reference: gathered rows equal each ASV's own tokens
        n = lengths[b]
        gathered = batch.tokens[batch.asv_index[b, :n]].numpy()
        expected = data.tokens[item["asv_index"]].astype(np.int64)
        np.testing.assert_array_equal(gathered, expected[:, :width])
        assert not expected[:, width:].any()
        np.testing.assert_array_equal(batch.counts[b, :n].numpy(), item["counts"])
        assert not batch.counts[b, n:].any() and not batch.asv_index[b, n:].any()
        assert not batch.asv_mask[b, n:].any()
    idx = np.array([item["sample_index"] for item in items])
    np.testing.assert_array_equal(batch.sample_index.numpy(), idx)
    assert batch.sample_ids == [data.sample_ids[i] for i in idx]
    np.testing.assert_array_equal(batch.distances.numpy(), matrix[idx][:, idx].astype(np.float32))
    assert batch.targets.dtype == torch.float32 and batch.targets.shape == (4,)
    np.testing.assert_array_equal(batch.categoricals.numpy(), np.stack([it["categoricals"] for it in items]))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and moved.sample_ids == batch.sample_ids


def test_faith_vector_lookup():
    lookup = MatrixDistanceLookup(np.array([0.5, 1.5, 2.5]))
    np.testing.assert_array_equal(lookup(np.array([2, 0])), [2.5, 0.5])


def test_validation_loader_keeps_every_sample(data):
    ds = SampleDataset(data, token_limit=5)
    loader = make_loader(ds, BatchCollator(data.tokens, data.sample_ids), batch_size=8, shuffle=False)
    seen = [sid for batch in loader for sid in batch.sample_ids]
    assert seen == ds.sample_ids and len(seen) % 8 != 0  # partial last batch kept


def test_loader_with_workers_matches_single_process(data):
    ds = SampleDataset(data, token_limit=6, asv_sampling="random", seed=2)
    collate = BatchCollator(data.tokens, data.sample_ids, MatrixDistanceLookup(np.eye(N_SAMPLES)))
    single = list(make_loader(ds, collate, batch_size=10, shuffle=True, seed=7))
    workers = list(make_loader(ds, collate, batch_size=10, shuffle=True, seed=7, num_workers=2))
    assert [b.sample_ids for b in single] == [b.sample_ids for b in workers]
    for a, b in zip(single, workers, strict=True):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.asv_index, b.asv_index)
        assert torch.equal(a.distances, b.distances)


@pytest.mark.parametrize("sampling", ["abundance", "random"])
def test_workers_persist_across_epochs_only_when_items_do_not_depend_on_the_epoch(data, sampling):
    """Kept workers hold their own copy of the dataset: with random ASV subsets (new each epoch) they restart
    every epoch so they see set_epoch; otherwise they persist. Either way two epochs equal a single process's."""
    from torch.utils.data import Subset

    collate = BatchCollator(data.tokens, data.sample_ids)
    ds = SampleDataset(data, token_limit=4, asv_sampling=sampling, seed=2)
    workers = make_loader(ds, collate, batch_size=10, shuffle=False, num_workers=2)
    single = make_loader(ds, collate, batch_size=10, shuffle=False)
    assert workers.persistent_workers == (sampling == "abundance") and not single.persistent_workers
    assert make_loader(Subset(ds, [0, 1]), collate, 2, shuffle=False, num_workers=2).persistent_workers == (
        sampling == "abundance")
    epochs = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        by_workers, by_one = list(workers), list(single)
        assert all(torch.equal(a.asv_index, b.asv_index) and torch.equal(a.counts, b.counts)
                   for a, b in zip(by_workers, by_one, strict=True))
        epochs.append(torch.cat([b.counts.flatten() for b in by_workers]))
    assert torch.equal(*epochs) == (sampling == "abundance")  # random subsets change with the epoch


def test_thinned_reads_are_a_binomial_draw_new_each_epoch(data):
    """--augment-reads: each ASV keeps Binomial(count, f) reads, drawn anew per epoch, repeatable per seed."""
    asvs = np.arange(3, dtype=np.int64)
    counts = np.array([400.0, 100.0, 20.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    draws = np.zeros(3)
    for _ in range(2000):
        kept, thinned = thin_reads(asvs, counts, 0.25, rng)
        draws[kept] += thinned
    np.testing.assert_allclose(draws / 2000, counts * 0.25, rtol=0.03)  # binomial mean
    kept, thinned = thin_reads(asvs, np.array([1.0, 1.0, 1.0], np.float32), 1e-6, np.random.default_rng(1))
    assert len(kept) == 1 and thinned[0] == 1  # a sample never empties

    full = SampleDataset(data, token_limit=50)
    augmented = SampleDataset(data, token_limit=3, seed=5, read_fraction=0.5)
    same_seed = SampleDataset(data, token_limit=3, seed=5, read_fraction=0.5)
    epochs = []
    for epoch in range(3):
        augmented.set_epoch(epoch)
        same_seed.set_epoch(epoch)
        items = [augmented[i] for i in range(len(augmented))]
        for item, again, whole in zip(items, [same_seed[i] for i in range(len(same_seed))],
                                      [full[i] for i in range(len(full))]):
            np.testing.assert_array_equal(item["asv_index"], again["asv_index"])
            assert len(item["asv_index"]) <= 3 and set(item["asv_index"]) <= set(whole["asv_index"])
            original = dict(zip(whole["asv_index"], whole["counts"]))
            assert all(0 < c <= original[a] for a, c in zip(item["asv_index"], item["counts"]))
            assert np.all(np.diff(item["counts"]) <= 0)  # most abundant first
        epochs.append(np.concatenate([i["counts"] for i in items]))
    assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])
    with pytest.raises(AamError, match="--augment-reads"):
        SampleDataset(data, read_fraction=1.5)


def test_asvs_in_groups_against_a_loop_and_keep_asvs(data):
    rows = np.arange(0, N_SAMPLES, 2)
    groups = [f"g{r % 5}" for r in rows]
    dense = _dense(data)
    for minimum in (1, 2, 3):
        expected = [len({g for r, g in zip(rows, groups) if dense[r, j] > 0}) >= minimum for j in range(N_ASVS)]
        np.testing.assert_array_equal(asvs_in_groups(data, rows, groups, minimum), expected)
    keep = asvs_in_groups(data, rows, groups, 3)
    assert 0 < keep.sum() < N_ASVS
    kept = data.keep_asvs(keep)
    np.testing.assert_array_equal(kept.counts.toarray(), dense * keep)
    assert kept.sample_ids == data.sample_ids and kept.tokens is data.tokens
