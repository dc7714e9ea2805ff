"""A small synthetic amplicon dataset with known structure, for the demo and the tests.

ASV sequences evolve along a random rooted tree (substitutions proportional to branch length, so related ASVs
look alike); samples draw counts from a Dirichlet-multinomial over a few community types, each favouring one
clade; the metadata holds a numeric ``target`` that depends on clade abundances, a categorical ``site`` whose
effect on the target differs between clades (something for position-specific fusion to find) and a string
``label`` (the community type) for classification.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import biom
import h5py
import numpy as np
import pandas as pd

from aam.errors import AamError
from aam.fileio import atomic_write

NUCLEOTIDES = np.array(list("ACGT"))
SITES = ("north", "south", "east")
SITE_EFFECT = {"north": 1.0, "south": -1.0, "east": 0.0}  # multiplies the abundance of clade 1


@dataclass
class SyntheticDataset:
    """The dataset in memory; ASV ids are the sequences (and the tree's tip names)."""

    newick: str
    sequences: list[str]  # [N_asvs], unique, uppercase ACGT
    counts: np.ndarray  # [N_samples, N_asvs] int64
    metadata: pd.DataFrame  # columns sample_id (str), target (float), site, label
    clades: np.ndarray  # [N_asvs] int64, the clade (= favoured community type) of each ASV

    @property
    def asv_ids(self) -> list[str]:
        return self.sequences


def random_tree(n_tips: int, rng: np.random.Generator) -> tuple[list, list[int]]:
    """A random rooted binary tree by successive random merges: (nested node, tips in traversal order)."""
    nodes: list = [("tip", i) for i in range(n_tips)]
    while len(nodes) > 1:
        i, j = sorted(rng.choice(len(nodes), size=2, replace=False))
        right, left = nodes.pop(j), nodes.pop(i)
        lengths = rng.uniform(0.01, 0.2, size=2)
        nodes.append(("node", (left, lengths[0]), (right, lengths[1])))
    root = nodes[0]
    order: list[int] = []

    def visit(node) -> None:
        if node[0] == "tip":
            order.append(node[1])
        else:
            visit(node[1][0])
            visit(node[2][0])

    visit(root)
    return root, order


def evolve(root, n_tips: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Sequences [n_tips, length] (letters) after substitutions along every branch."""
    sequences = np.empty((n_tips, length), dtype="<U1")

    def descend(node, sequence: np.ndarray) -> None:
        if node[0] == "tip":
            sequences[node[1]] = sequence
            return
        for child, branch in node[1:]:
            changed = rng.random(length) < 0.5 * (1 - np.exp(-branch * 2))
            child_sequence = sequence.copy()
            child_sequence[changed] = rng.choice(NUCLEOTIDES, size=int(changed.sum()))
            descend(child, child_sequence)

    descend(root, rng.choice(NUCLEOTIDES, size=length))
    return sequences


def newick(node, names: list[str]) -> str:
    if node[0] == "tip":
        return names[node[1]]
    parts = [f"{newick(child, names)}:{branch:.5f}" for child, branch in node[1:]]
    return f"({','.join(parts)})"


def unique_sequences(letters: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> list[str]:
    seen: set[str] = set()
    sequences = []
    for row, n in zip(letters, lengths):
        row = row[:n].copy()
        while "".join(row) in seen:
            row[rng.integers(n)] = rng.choice(NUCLEOTIDES)
        sequences.append("".join(row))
        seen.add(sequences[-1])
    return sequences


def _check_sizes(n_samples: int, n_asvs: int, seq_len_range: tuple[int, int], n_communities: int) -> None:
    if n_samples < 4:
        raise AamError(f"need at least 4 samples, got {n_samples}", source="--samples")
    if n_communities < 2 or n_asvs < 2 * n_communities:
        raise AamError(f"need at least {2 * max(n_communities, 2)} ASVs (2 per community type), got {n_asvs}",
                       source="--asvs")
    if not 1 <= seq_len_range[0] <= seq_len_range[1]:
        raise ValueError(f"seq_len_range must be (low, high) with 1 <= low <= high, got {seq_len_range}")


def make_synthetic_dataset(n_samples: int = 120, n_asvs: int = 60, seq_len_range: tuple[int, int] = (100, 150),
                           n_communities: int = 3, seed: int = 0) -> SyntheticDataset:
    """Build the dataset in memory; the same arguments give the same dataset."""
    _check_sizes(n_samples, n_asvs, seq_len_range, n_communities)
    rng = np.random.default_rng(seed)
    root, order = random_tree(n_asvs, rng)
    low, high = seq_len_range
    letters = evolve(root, n_asvs, high, rng)
    sequences = unique_sequences(letters, rng.integers(low, high + 1, size=n_asvs), rng)
    clades = np.empty(n_asvs, dtype=np.int64)
    for clade, tips in enumerate(np.array_split(np.array(order), n_communities)):
        clades[tips] = clade  # contiguous in traversal order = related on the tree
    community = rng.integers(n_communities, size=n_samples)  # [N_samples] community type of each sample
    counts = _sample_counts(community, clades, rng)
    metadata = _metadata(counts, clades, community, rng)
    return SyntheticDataset(newick(root, sequences) + ";", sequences, counts, metadata, clades)


def make_clade_driven_dataset(n_samples: int = 120, n_asvs: int = 60, seed: int = 0, n_clades: int = 6,
                              max_share: float = 0.3) -> SyntheticDataset:
    """The demo dataset (``n_clades`` community types) with a target driven by one clade only, to score
    attribution methods.

    Clade 0's reads are redrawn independently of the sample's community: a share drawn uniformly from
    [0, ``max_share``] of the sample's reads, spread over the clade's ASVs by a flat Dirichlet. ``target`` =
    20 + 100 x (clade-0 share) + N(0, 0.5). The other clades carry no information on the target beyond
    renormalisation: removing one of their ASVs raises the clade-0 share a little, and these small effects
    add up to the drivers' total, so the fewer the drivers (one clade of ``n_clades``), the clearer each
    stands out.
    """
    data = make_synthetic_dataset(n_samples=n_samples, n_asvs=n_asvs, n_communities=n_clades, seed=seed)
    rng = np.random.default_rng([seed, 1])
    counts = data.counts.copy()
    driver = data.clades == 0
    counts[:, driver] = 0
    share = rng.uniform(0.0, max_share, size=n_samples)
    for s, others in enumerate(counts.sum(1)):
        reads = int(round(others * share[s] / (1 - share[s])))
        counts[s, driver] = rng.multinomial(reads, rng.dirichlet(np.ones(int(driver.sum()))))
    realised = counts[:, driver].sum(1) / np.maximum(counts.sum(1), 1)
    metadata = data.metadata.copy()
    metadata["target"] = (20 + 100 * realised + rng.normal(0, 0.5, n_samples)).round(4)
    return SyntheticDataset(data.newick, data.sequences, counts, metadata, data.clades)


def _sample_counts(community: np.ndarray, clades: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dirichlet-multinomial counts [N_samples, N_asvs]: each community type favours its clade; 500-2000 reads."""
    counts = np.zeros((len(community), len(clades)), dtype=np.int64)
    for s, favoured in enumerate(community):
        proportions = rng.dirichlet(np.where(clades == favoured, 2.0, 0.15))
        counts[s] = rng.multinomial(int(rng.integers(500, 2001)), proportions)
    return counts


def _metadata(counts: np.ndarray, clades: np.ndarray, community: np.ndarray,
              rng: np.random.Generator) -> pd.DataFrame:
    """``target`` = 20 + 40 * clade-0 abundance + 30 * site effect * clade-1 abundance + noise; ``label`` = type."""
    n_samples = len(counts)
    relative = counts / counts.sum(1, keepdims=True)
    clade_abundance = np.stack([relative[:, clades == c].sum(1) for c in range(int(clades.max()) + 1)], axis=1)
    site = rng.choice(SITES, size=n_samples)
    effect = np.array([SITE_EFFECT[s] for s in site])
    target = 20 + 40 * clade_abundance[:, 0] + 30 * effect * clade_abundance[:, 1] + rng.normal(0, 1.5, n_samples)
    return pd.DataFrame({"sample_id": [f"S{i + 1:03d}" for i in range(n_samples)], "target": target.round(3),
                         "site": site, "label": [f"type_{chr(ord('a') + int(c))}" for c in community]})


def write_biom(path: Path, counts: np.ndarray, feature_ids: list[str], sample_ids: list[str]) -> None:
    table = biom.Table(counts.T.astype(float), observation_ids=feature_ids, sample_ids=sample_ids)

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as handle:
            table.to_hdf5(handle, "aam synthetic data")

    atomic_write(path, write)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_synthetic_dataset(out_dir: str | os.PathLike, dataset: SyntheticDataset | None = None,
                            **kwargs) -> dict[str, Path]:
    """Write ``out_dir/data/{table.biom, tree.nwk, metadata.tsv, table_hashed.biom, sequences.fasta}``.

    Writes ``dataset``, else makes one: keyword arguments go to :func:`make_synthetic_dataset`. Returns the
    paths by role: ``table``, ``tree``, ``metadata``, ``table_hashed``, ``sequences``.
    """
    data = dataset if dataset is not None else make_synthetic_dataset(**kwargs)
    folder = Path(out_dir) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"table": folder / "table.biom", "tree": folder / "tree.nwk", "metadata": folder / "metadata.tsv",
             "table_hashed": folder / "table_hashed.biom", "sequences": folder / "sequences.fasta"}
    sample_ids = data.metadata["sample_id"].tolist()
    hashed = [hashlib.md5(s.encode()).hexdigest() for s in data.sequences]
    write_biom(paths["table"], data.counts, data.sequences, sample_ids)
    write_biom(paths["table_hashed"], data.counts, hashed, sample_ids)
    write_text(paths["tree"], data.newick + "\n")
    write_text(paths["metadata"], data.metadata.to_csv(sep="\t", index=False))
    write_text(paths["sequences"], "".join(f">{h}\n{s}\n" for h, s in zip(hashed, data.sequences)))
    return paths
