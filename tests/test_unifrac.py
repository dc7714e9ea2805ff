"""The UniFrac engine against scikit-bio on small random trees and awkward tables."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from skbio import TreeNode
from skbio.diversity import alpha_diversity, beta_diversity

from aam.errors import AamError
from aam.unifrac import UniFracEngine, get_metric, load_tree

TOLERANCE = 1e-9
# our metric name -> scikit-bio's name and keyword arguments
SKBIO = {
    "unweighted": ("unweighted_unifrac", {}),
    "weighted-normalized": ("weighted_unifrac", {"normalized": True}),
    "weighted-unnormalized": ("weighted_unifrac", {}),
    "braycurtis": ("braycurtis", {}),
    "jaccard": ("jaccard", {}),
}


def random_newick(rng: np.random.Generator, n_tips: int, zero_fraction: float = 0.15) -> str:
    """A random rooted tree with some polytomies and zero-length branches, a length on the root too."""

    def length() -> str:
        return "0" if rng.random() < zero_fraction else f"{rng.uniform(0.01, 1.0):.6f}"

    clades = [f"t{k}:{length()}" for k in range(n_tips)]
    while len(clades) > 2:
        size = 3 if len(clades) > 3 and rng.random() < 0.2 else 2  # a polytomy now and then
        picked = sorted(rng.choice(len(clades), size=size, replace=False), reverse=True)
        children = [clades.pop(i) for i in picked]
        clades.append(f"({','.join(children)}):{length()}")
    return f"({','.join(clades)}):0.25;"


def awkward_counts(rng: np.random.Generator, n_samples: int, asvs: int) -> np.ndarray:
    """Sparse random counts plus identical, disjoint, single-ASV and empty samples: [N, T] int."""
    counts = rng.poisson(3.0, size=(n_samples, asvs)) * (rng.random((n_samples, asvs)) < 0.35)
    counts[1] = counts[0]  # identical samples
    counts[2], counts[3] = 0, 0
    counts[2, : asvs // 2] = 5  # disjoint pair
    counts[3, asvs // 2:] = 2
    counts[4] = 0
    counts[4, 7] = 9  # single ASV
    counts[5] = 0  # empty sample
    counts[6] = 0
    counts[6, 7] = 1  # the same single ASV at another depth
    return counts


def make_case(seed: int, n_samples: int = 24, n_asvs: int = 30, extra_tips: int = 6):
    """A tree with tips not in the table, an ASV order shuffled against the tree, and counts."""
    rng = np.random.default_rng(seed)
    tree = TreeNode.read(StringIO(random_newick(rng, n_asvs + extra_tips)))
    asv_ids = [f"t{k}" for k in rng.permutation(n_asvs + extra_tips)[:n_asvs]]
    return tree, asv_ids, awkward_counts(rng, n_samples, n_asvs)


def skbio_matrix(metric: str, counts: np.ndarray, asv_ids: list[str], tree: TreeNode, **kwargs) -> np.ndarray:
    name, options = SKBIO[metric]
    if name.endswith("unifrac"):
        options = {**options, "taxa": asv_ids, "tree": tree, **kwargs}
    return beta_diversity(name, counts, **options).data


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", list(SKBIO))
def test_pairwise_equals_scikit_bio(metric, seed):
    tree, asv_ids, counts = make_case(seed)
    if metric == "braycurtis":
        counts = counts[np.flatnonzero(counts.sum(axis=1))]  # scipy's Bray-Curtis is 0/0 between empty samples
    ours = UniFracEngine(tree, asv_ids).pairwise(counts, metric)
    np.testing.assert_allclose(ours, skbio_matrix(metric, counts, asv_ids, tree), rtol=0, atol=TOLERANCE)
    assert np.array_equal(ours, ours.T) and np.all(np.diag(ours) == 0)


def test_awkward_samples_follow_the_conventions():
    tree, asv_ids, counts = make_case(3)
    engine = UniFracEngine(tree, asv_ids)
    unweighted = engine.pairwise(counts, "unweighted")
    assert unweighted[0, 1] == pytest.approx(0, abs=1e-12)  # identical
    assert unweighted[4, 6] == pytest.approx(0, abs=1e-12)  # same single ASV, different depth
    assert unweighted[5, 0] == 1.0  # empty against non-empty, as scikit-bio
    assert engine.pairwise(counts, "weighted-normalized")[4, 6] == pytest.approx(0, abs=1e-12)


def test_samples_in_disjoint_clades_are_at_distance_one():
    tree = TreeNode.read(StringIO("((a:1,b:2):0.5,(c:1,(d:0.5,e:0):0):1);"))
    counts = np.array([[1, 3, 0, 0, 0], [0, 0, 2, 0, 1], [0, 0, 0, 0, 4]])
    engine = UniFracEngine(tree, list("abcde"))
    assert engine.pairwise(counts, "unweighted")[0, 1] == 1.0
    assert engine.pairwise(counts, "jaccard")[0, 1] == 1.0
    assert engine.pairwise(counts, "braycurtis")[0, 1] == 1.0
    assert engine.pairwise(counts, "weighted-normalized")[0, 1] == pytest.approx(1.0, abs=1e-12)


def test_faith_pd_equals_scikit_bio():
    tree, asv_ids, counts = make_case(4)
    expected = alpha_diversity("faith_pd", counts, taxa=asv_ids, tree=tree).to_numpy()
    np.testing.assert_allclose(UniFracEngine(tree, asv_ids).faith_pd(counts), expected, rtol=0, atol=TOLERANCE)


def test_all_zero_branch_lengths_match_scikit_bio():
    tree, asv_ids, counts = make_case(5)
    for node in tree.traverse():
        node.length = 0.0
    ours = UniFracEngine(tree, asv_ids).pairwise(counts, "unweighted")
    np.testing.assert_allclose(ours, skbio_matrix("unweighted", counts, asv_ids, tree), atol=TOLERANCE)
    assert np.all(ours == 0)


def test_unrooted_tree_uses_the_trifurcation_as_root():
    tree = TreeNode.read(StringIO("((a:1,b:2):0.5,(c:1,d:0.5):1,e:3);"))
    asv_ids = ["a", "b", "c", "d", "e"]
    counts = np.array([[1, 0, 2, 0, 1], [0, 3, 0, 1, 1], [4, 4, 0, 0, 0]])
    for metric in ("unweighted", "weighted-normalized"):
        expected = skbio_matrix(metric, counts, asv_ids, tree, validate=False)
        np.testing.assert_allclose(UniFracEngine(tree, asv_ids).pairwise(counts, metric), expected,
                                   atol=TOLERANCE)


@pytest.mark.parametrize("metric", list(SKBIO))
def test_blocks_equal_one_block(metric):
    tree, asv_ids, counts = make_case(6, n_samples=37)
    prepared = UniFracEngine(tree, asv_ids).prepare(counts, metric)
    whole = prepared.pairwise(block_size=1000)
    for block_size in (1, 5, 16):
        np.testing.assert_allclose(prepared.pairwise(block_size=block_size), whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("metric", list(SKBIO))
def test_float32_is_close_to_float64(metric):
    tree, asv_ids, counts = make_case(7)
    prepared = UniFracEngine(tree, asv_ids).prepare(counts, metric)
    single = prepared.pairwise(block_size=10, dtype="float32")
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, prepared.pairwise(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("metric", list(SKBIO))
def test_batch_equals_the_sub_block(metric):
    tree, asv_ids, counts = make_case(8, n_samples=30)
    engine = UniFracEngine(tree, asv_ids)
    prepared = engine.prepare(counts, metric)
    whole = prepared.pairwise(block_size=7)
    picked = np.array([9, 0, 5, 1, 22, 3])
    np.testing.assert_allclose(prepared.batch(picked), whole[np.ix_(picked, picked)], rtol=0, atol=1e-12)
    np.testing.assert_allclose(engine.batch(counts[picked], metric), whole[np.ix_(picked, picked)],
                               rtol=0, atol=1e-12)
    assert prepared.batch(picked, dtype="float32").dtype == np.float32


@pytest.mark.parametrize("metric", list(SKBIO))
def test_batches_built_on_demand_equal_skbio_and_keep_no_branch_matrix(metric):
    """Training's per-batch targets (features of each batch built from its counts, float32 counts kept as
    given) against scikit-bio on the same samples: the awkward ones (identical, disjoint, empty) included."""
    tree, asv_ids, counts = make_case(9, n_samples=30)
    batched = UniFracEngine(tree, asv_ids).for_batches(counts.astype(np.float32), metric)
    assert batched.counts.dtype == np.float32 and batched.n_samples == 30
    for picked in (np.array([9, 0, 5, 1, 22, 3]), np.array([1, 0, 2, 3, 4, 5, 6]), np.arange(30)):
        expected = skbio_matrix(metric, counts[picked], asv_ids, tree)
        np.testing.assert_allclose(batched.batch(picked), expected, rtol=0, atol=TOLERANCE)
    assert batched.batch(picked, dtype="float32").dtype == np.float32
    with pytest.raises(AamError, match="non-negative"):
        UniFracEngine(tree, asv_ids).for_batches(-counts, metric)


def test_missing_tips_are_named():
    tree, asv_ids, _ = make_case(9)
    wanted = [*asv_ids, "not_a_tip_1", "not_a_tip_2"]
    with pytest.raises(AamError, match=r"2 of the table's 32 ASVs are not tips.*'not_a_tip_1'") as err:
        UniFracEngine(tree, wanted, source="tree.nwk")
    assert err.value.source == "tree.nwk" and "covering every ASV" in err.value.hint


def test_missing_branch_length_is_an_error_but_a_missing_root_length_is_not():
    with pytest.raises(AamError, match="1 branches have no length"):
        UniFracEngine(TreeNode.read(StringIO("((a:1,b):1,c:2);")), ["a", "b", "c"])
    engine = UniFracEngine(TreeNode.read(StringIO("((a:1,b:1):1,c:2);")), ["a", "b", "c"])
    assert engine.faith_pd(np.array([[1, 1, 1]]))[0] == pytest.approx(5.0)


def test_phylogenetic_metric_without_a_tree_and_unknown_metric():
    engine = UniFracEngine(None, ["a", "b"])
    assert engine.pairwise(np.array([[1, 0], [0, 1]]), "jaccard")[0, 1] == 1.0
    with pytest.raises(AamError, match="needs a phylogenetic tree"):
        engine.pairwise(np.array([[1, 0], [0, 1]]), "unweighted")
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("euclid")
    assert get_metric("unifrac").name == "unweighted" and get_metric("weighted").name == "weighted-normalized"


def test_negative_counts_are_refused():
    engine = UniFracEngine(None, ["a", "b"])
    with pytest.raises(AamError, match="non-negative"):
        engine.pairwise(np.array([[1, -1], [0, 1]]), "braycurtis")


def test_load_tree_keeps_underscores_and_reports_bad_files(tmp_path):
    path = tmp_path / "t.nwk"
    path.write_text("((asv_1:1,asv_2:1):1,asv_3:2);")
    assert sorted(t.name for t in load_tree(path).tips()) == ["asv_1", "asv_2", "asv_3"]
    with pytest.raises(AamError, match="file not found"):
        load_tree(tmp_path / "missing.nwk")
    (tmp_path / "bad.nwk").write_text("((a:1,b:1;")
    with pytest.raises(AamError, match="not a readable Newick tree"):
        load_tree(tmp_path / "bad.nwk")


@pytest.mark.parametrize("metric", ["unweighted", "weighted-normalized"])
def test_distances_ignore_a_callers_bf16_autocast(metric):
    """The DDP/FSDP step builds the global batch's UniFrac targets inside its autocast region: under bf16 on CPU
    they must still be computed, exactly, in the dtype asked for (they once came back as bf16 and failed)."""
    import torch

    tree, asv_ids, counts = make_case(0)
    batches = UniFracEngine(tree, asv_ids).for_batches(counts, metric)
    plain = batches.batch(np.arange(6), dtype="float32")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = batches.batch(np.arange(6), dtype="float32")
    assert inside.dtype == np.float32
    np.testing.assert_array_equal(inside, plain)
