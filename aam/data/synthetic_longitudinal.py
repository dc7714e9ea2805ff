"""A synthetic longitudinal classification benchmark: many time points per person, a label constant per person.

It reproduces a failure seen on a gut cohort (Crohn's disease vs control): under cross-validation grouped by
person, a random forest on relative abundances generalises to new people while a model that reads only each
sample's most abundant ASVs memorises people instead. ASVs are 100-nt sequences evolved along a random tree and
split into clades. A SHARED pool may be carried by anyone; every person also has PRIVATE ASVs (1-3
substitutions away from a shared ASV they carry, and a tip next to it on the tree) that are among their most
abundant, so a sample's top ASVs mostly identify its person. Time points are Dirichlet draws around the
person's base profile, then multinomial reads. The disease signal is an enrichment, in cases, of every ASV
(shared and private) of a few minor "disease clades": a forest can use the shared part on new people, only a
model that reads sequences or the tree can use the private part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aam.data.synthetic import (
    NUCLEOTIDES,
    evolve,
    newick,
    random_tree,
    unique_sequences,
    write_biom,
    write_text,
)
from aam.errors import AamError

SEQUENCE_LENGTH = 100
LABELS = ("control", "CD")  # index = is_case


@dataclass(frozen=True)
class LongitudinalDesign:
    """The generator's tunables; the defaults give the benchmark described in the module docstring."""

    n_shared: int = 300  # ASVs anyone may carry
    n_carried: int = 150  # shared ASVs in each person's base profile
    carriage_skew: float = 1.5  # sd of log carriage weights: 0 = every shared ASV equally often carried
    n_private: int = 40  # ASVs private to each person, spread evenly over clades
    n_clades: int = 10
    n_disease_clades: int = 2
    enrichment: float = 4.5  # abundance factor of disease-clade ASVs in cases
    disease_clade_scale: float = 0.08  # disease clades are minor: their ASVs' abundance factor in everyone
    private_boost: float = 2.0  # log abundance added to private ASVs
    asv_spread: float = 1.0  # sd of the cohort-wide log abundances of ASVs
    person_spread: float = 0.5  # sd of a person's deviations from them
    clade_spread: float = 0.3  # sd of a person's log clade factors
    concentration: float = 1000.0  # Dirichlet concentration of time points around the person's profile
    depth_range: tuple[int, int] = (5000, 10000)  # reads per sample, inclusive


@dataclass
class LongitudinalDataset:
    """The dataset in memory; ASV ids are the sequences (and the tree's tip names)."""

    newick: str
    sequences: list[str]  # [N_asvs], unique, 100 nt of ACGT
    counts: np.ndarray  # [N_samples, N_asvs] int64
    metadata: pd.DataFrame  # columns sample_id, subject, time (int), disease ("CD" / "control")
    clades: np.ndarray  # [N_asvs] int64
    disease_clades: tuple[int, ...]
    private_owner: np.ndarray  # [N_asvs] int64, owner's subject index, -1 for shared ASVs

    @property
    def asv_ids(self) -> list[str]:
        return self.sequences


def _check_sizes(n_subjects: int, samples_per_subject: int, design: LongitudinalDesign) -> None:
    if n_subjects < 4:
        raise AamError(f"need at least 4 subjects (2 cases, 2 controls), got {n_subjects}", source="n_subjects")
    if samples_per_subject < 1:
        raise AamError(f"need at least 1 sample per subject, got {samples_per_subject}",
                       source="samples_per_subject")
    if not 2 <= design.n_clades <= design.n_shared:
        raise AamError(f"need 2 to n_shared ({design.n_shared}) clades, got {design.n_clades}", source="n_clades")
    if not 1 <= design.n_disease_clades < design.n_clades:
        raise AamError(f"need 1 to n_clades - 1 disease clades, got {design.n_disease_clades}",
                       source="n_disease_clades")
    if not 1 <= design.n_carried <= design.n_shared or not 0 <= design.n_private <= design.n_carried:
        raise AamError("need 1 <= n_carried <= n_shared and 0 <= n_private <= n_carried, got "
                       f"{design.n_carried}, {design.n_shared}, {design.n_private}", source="n_carried")
    if min(design.enrichment, design.disease_clade_scale, design.concentration) <= 0:
        raise AamError("enrichment, disease_clade_scale and concentration must be positive", source="tunables")
    low, high = design.depth_range
    if not 1 <= low <= high:
        raise AamError(f"depth_range must be (low, high) with 1 <= low <= high, got {design.depth_range}",
                       source="depth_range")


def make_longitudinal_dataset(n_subjects: int = 24, samples_per_subject: int = 20, seed: int = 0,
                              **tunables) -> LongitudinalDataset:
    """Build the dataset in memory; ``tunables`` are :class:`LongitudinalDesign` fields. Deterministic in ``seed``."""
    design = LongitudinalDesign(**tunables)
    _check_sizes(n_subjects, samples_per_subject, design)
    rng = np.random.default_rng(seed)
    root, shared, shared_clades = _shared_pool(design, rng)
    disease_clades = tuple(sorted(int(c) for c in rng.choice(design.n_clades, design.n_disease_clades,
                                                             replace=False)))
    carriage = np.exp(design.carriage_skew * rng.standard_normal(design.n_shared))  # [n_shared]
    carried = [rng.choice(design.n_shared, design.n_carried, replace=False, p=carriage / carriage.sum())
               for _ in range(n_subjects)]
    parents = np.concatenate([_private_parents(c, shared_clades, design.n_private, rng) for c in carried])
    private, substitutions = _private_sequences(shared, parents, rng)
    clades = np.concatenate([shared_clades, shared_clades[parents]])  # [N_asvs]
    owner = np.concatenate([np.full(design.n_shared, -1), np.repeat(np.arange(n_subjects), design.n_private)])
    is_case = rng.permutation(np.arange(n_subjects) < n_subjects // 2)  # [n_subjects] bool
    profiles = _base_profiles(carried, owner, clades, disease_clades, is_case, design, rng)
    counts = _sample_counts(profiles, samples_per_subject, design, rng)
    observed = counts.sum(0) > 0  # [N_asvs]; an ASV never read is left out of table and tree
    tree = _prune(_attach_private(root, parents, substitutions, design.n_shared), 0.0, observed)[0]
    sequences = shared + private
    return LongitudinalDataset(newick(tree, sequences) + ";", [s for s, keep in zip(sequences, observed) if keep],
                               counts[:, observed], _metadata(is_case, samples_per_subject), clades[observed],
                               disease_clades, owner[observed])


def _shared_pool(design: LongitudinalDesign, rng: np.random.Generator) -> tuple[tuple, list[str], np.ndarray]:
    """The shared ASVs: their tree (tips 0..n_shared-1), unique 100-nt sequences and clades [n_shared]."""
    root, order = random_tree(design.n_shared, rng)
    letters = evolve(root, design.n_shared, SEQUENCE_LENGTH, rng)  # [n_shared, 100]
    sequences = unique_sequences(letters, np.full(design.n_shared, SEQUENCE_LENGTH), rng)
    clades = np.empty(design.n_shared, dtype=np.int64)
    for clade, tips in enumerate(np.array_split(np.array(order), design.n_clades)):
        clades[tips] = clade  # contiguous in traversal order = related on the tree
    return root, sequences, clades


def _private_parents(carried: np.ndarray, clades: np.ndarray, n_private: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``n_private`` of a person's carried ASVs, spread round-robin over clades (a random clade order per round)."""
    shuffled = rng.permutation(carried)
    taken: dict[int, int] = {}
    rounds = []  # [len(carried)] how many of the same clade come before each ASV in ``shuffled``
    for clade in clades[shuffled]:
        rounds.append(taken.get(clade, 0))
        taken[clade] = rounds[-1] + 1
    return shuffled[np.argsort(rounds, kind="stable")[:n_private]]


def _private_sequences(shared: list[str], parents: np.ndarray,
                       rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Copies of ``shared[parents]`` with 1-3 substitutions each, unique among all; and the substitution counts."""
    seen = set(shared)
    sequences, substitutions = [], rng.integers(1, 4, size=len(parents))
    for parent, n_changes in zip(parents, substitutions):
        sequence = None
        while sequence is None or sequence in seen:
            letters = np.array(list(shared[parent]))
            for position in rng.choice(SEQUENCE_LENGTH, n_changes, replace=False):
                letters[position] = rng.choice(NUCLEOTIDES[NUCLEOTIDES != letters[position]])
            sequence = "".join(letters)
        seen.add(sequence)
        sequences.append(sequence)
    return sequences, substitutions


def _base_profiles(carried: list[np.ndarray], owner: np.ndarray, clades: np.ndarray,
                   disease_clades: tuple[int, ...], is_case: np.ndarray, design: LongitudinalDesign,
                   rng: np.random.Generator) -> np.ndarray:
    """Each person's expected relative abundances [n_subjects, N_asvs]: carried shared ASVs and own private ones."""
    n_subjects, n_asvs = len(carried), len(owner)
    in_disease_clade = np.isin(clades, disease_clades)  # [N_asvs]
    typical = design.asv_spread * rng.standard_normal(n_asvs)  # [N_asvs] cohort-wide log abundance
    profiles = np.zeros((n_subjects, n_asvs))
    for subject in range(n_subjects):
        present = np.concatenate([carried[subject], np.flatnonzero(owner == subject)])
        log_weight = typical[present] + design.person_spread * rng.standard_normal(len(present))
        log_weight += design.clade_spread * rng.standard_normal(design.n_clades)[clades[present]]
        log_weight += design.private_boost * (owner[present] >= 0)
        weight = np.exp(log_weight) * np.where(in_disease_clade[present], design.disease_clade_scale, 1.0)
        if is_case[subject]:
            weight *= np.where(in_disease_clade[present], design.enrichment, 1.0)
        profiles[subject, present] = weight / weight.sum()
    return profiles


def _sample_counts(profiles: np.ndarray, samples_per_subject: int, design: LongitudinalDesign,
                   rng: np.random.Generator) -> np.ndarray:
    """Counts [n_subjects * samples_per_subject, N_asvs], subject-major: Dirichlet around the profile, multinomial."""
    low, high = design.depth_range
    counts = np.zeros((len(profiles) * samples_per_subject, profiles.shape[1]), dtype=np.int64)
    for subject, profile in enumerate(profiles):
        present = np.flatnonzero(profile)
        for time in range(samples_per_subject):
            proportions = rng.dirichlet(design.concentration * profile[present])
            row = subject * samples_per_subject + time
            counts[row, present] = rng.multinomial(int(rng.integers(low, high + 1)), proportions)
    return counts


def _attach_private(node, parents: np.ndarray, substitutions: np.ndarray, n_shared: int):
    """The shared tree with each private ASV (tip ``n_shared + i``) beside its parent, on a short branch."""
    if node[0] == "node":
        return ("node", *[(_attach_private(child, parents, substitutions, n_shared), branch)
                          for child, branch in node[1:]])
    subtree = node
    for i in np.flatnonzero(parents == node[1]):
        subtree = ("node", (subtree, 0.0), (("tip", n_shared + int(i)), substitutions[i] / SEQUENCE_LENGTH))
    return subtree


def _prune(node, branch: float, keep: np.ndarray):
    """``(node, branch)`` without the tips not in ``keep``, merging single-child nodes; None if nothing is left."""
    if node[0] == "tip":
        return (node, branch) if keep[node[1]] else None
    kept = [edge for child, length in node[1:] if (edge := _prune(child, length, keep)) is not None]
    if len(kept) < 2:
        return None if not kept else (kept[0][0], kept[0][1] + branch)
    return ("node", *kept), branch


def _metadata(is_case: np.ndarray, samples_per_subject: int) -> pd.DataFrame:
    """One row per sample, subject-major: sample_id ``P03_T07``, subject ``P03``, time 7, disease."""
    width = max(2, len(str(len(is_case))))
    time_width = max(2, len(str(samples_per_subject)))
    subjects = np.repeat([f"P{s + 1:0{width}d}" for s in range(len(is_case))], samples_per_subject)
    times = np.tile(np.arange(1, samples_per_subject + 1), len(is_case))
    return pd.DataFrame({"sample_id": [f"{s}_T{t:0{time_width}d}" for s, t in zip(subjects, times)],
                         "subject": subjects, "time": times.astype(np.int64),
                         "disease": np.repeat([LABELS[int(c)] for c in is_case], samples_per_subject)})


def write_longitudinal_dataset(out_dir: str | os.PathLike, **kwargs) -> dict[str, Path]:
    """Write ``out_dir/data/{table.biom, tree.nwk, metadata.tsv}``; return the paths by role.

    Keyword arguments go to :func:`make_longitudinal_dataset`. Roles: ``table`` (BIOM 2.1 HDF5, observation
    ids = sequences), ``tree`` (Newick, tips = sequences), ``metadata`` (tab-separated, first column sample_id).
    """
    data = make_longitudinal_dataset(**kwargs)
    folder = Path(out_dir) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"table": folder / "table.biom", "tree": folder / "tree.nwk", "metadata": folder / "metadata.tsv"}
    write_biom(paths["table"], data.counts, data.sequences, data.metadata["sample_id"].tolist())
    write_text(paths["tree"], data.newick + "\n")
    write_text(paths["metadata"], data.metadata.to_csv(sep="\t", index=False))
    return paths
