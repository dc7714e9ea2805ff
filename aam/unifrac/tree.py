"""Phylogenetic trees as matrices: the tip-to-branch incidence that turns UniFrac into array algebra.

A tree with M branches (nodes) over T table ASVs becomes an incidence matrix ``E`` [T, M] with
``E[t, b] = 1`` when branch ``b`` lies on the path from ASV ``t`` to the root (the tip itself and the root
included), so that per-sample branch abundances are ``counts @ E`` ([N, T] @ [T, M] -> [N, M]).
Conventions follow scikit-bio: the root's length counts like any other branch (0 when absent), every other
branch must have a length, a root with more than two children is used as given.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from skbio import TreeNode

from aam.data.qiime2 import artifact_payload, is_artifact
from aam.errors import AamError

log = logging.getLogger(__name__)

MAX_NAMED = 5


def short_id(name: str, width: int = 24) -> str:
    """A long id (an ASV sequence) cut to ``width`` characters for error messages."""
    return name if len(name) <= width else f"{name[:width]}..."


def named_examples(names: list[str]) -> str:
    """Up to five names, shortened and quoted, for an error message."""
    shown = ", ".join(f"'{short_id(str(n))}'" for n in names[:MAX_NAMED])
    return shown + (", ..." if len(names) > MAX_NAMED else "")


def load_tree(path: str | os.PathLike) -> TreeNode:
    """Read a Newick tree (or a QIIME 2 Phylogeny[Rooted] ``.qza``), keeping underscores in tip names (they
    are ids, not spaces)."""
    path = Path(path)
    if not path.is_file():
        raise AamError("file not found", source=path, hint="check the --tree path")
    if is_artifact(path):
        with artifact_payload(path, "tree") as payload:
            tree = _read_newick(payload, source=path)
    else:
        tree = _read_newick(path, source=path)
    if tree.is_tip():
        raise AamError("the tree has a single node", source=path, hint="give a tree with at least two tips")
    return tree


def _read_newick(path: Path, source: Path) -> TreeNode:
    try:
        with warnings.catch_warnings():  # skbio warns before failing on malformed input; the error says it
            warnings.simplefilter("ignore")
            return TreeNode.read(str(path), format="newick", convert_underscores=False)
    except Exception as err:  # skbio raises several types for malformed Newick
        raise AamError(f"not a readable Newick tree ({type(err).__name__})", source=source,
                       hint="give a rooted Newick tree whose tip names are the table's ASV ids") from None


@dataclass(frozen=True)
class TreeIncidence:
    """A tree restricted to the branches above a table's ASVs.

    Attributes:
        incidence: [T, M] CSR of 0/1, ASV ``t`` descends from (or is) branch ``b``.
        lengths: [M] float64 branch lengths (the root's included, as scikit-bio counts it).
        tip_depths: [T] float64 distance from each ASV to the root, the root's own length included (as
            scikit-bio's weighted normalized UniFrac counts it).
    """

    incidence: sp.csr_matrix
    lengths: np.ndarray
    tip_depths: np.ndarray

    @property
    def n_branches(self) -> int:
        return self.incidence.shape[1]

    @classmethod
    def build(cls, tree: TreeNode, asv_ids: list[str], source: str | os.PathLike | None = None
              ) -> TreeIncidence:
        """Index ``tree`` for the ASVs ``asv_ids`` (table order); tree tips not in the table are ignored."""
        nodes = list(tree.postorder(include_self=True))  # root last
        lengths = _branch_lengths(nodes, source)  # [M_all]
        parents = _parent_indices(nodes)  # [M_all], -1 at the root
        tips = _tip_rows(nodes, asv_ids, source)  # [T] node index of each ASV
        rows, cols = _paths_to_root(tips, parents)
        incidence = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(tips), len(nodes)))
        used = np.flatnonzero(incidence.getnnz(axis=0))  # branches above at least one ASV
        incidence = incidence[:, used].tocsr()
        lengths = lengths[used]
        tip_depths = np.asarray(incidence @ lengths).ravel()
        if len(tree.children) > 2:
            log.warning("the tree's root has %d children (an unrooted tree?); it is used as the root",
                        len(tree.children))
        return cls(incidence=incidence, lengths=lengths, tip_depths=tip_depths)


def _branch_lengths(nodes: list[TreeNode], source) -> np.ndarray:
    """[M] lengths in postorder; the root's missing length is 0, any other missing one is an error."""
    lengths = np.array([np.nan if n.length is None else float(n.length) for n in nodes])
    if np.isnan(lengths[-1]):
        lengths[-1] = 0.0
    missing = np.flatnonzero(~np.isfinite(lengths))
    if len(missing):
        names = [nodes[i].name or "(internal)" for i in missing]
        raise AamError(f"{len(missing)} branches have no length (e.g. {named_examples(names)})",
                       source=source, hint="UniFrac needs a tree with a length on every branch")
    negative = np.flatnonzero(lengths < 0)
    if len(negative):
        raise AamError(f"{len(negative)} branches have negative lengths", source=source,
                       hint="give a tree with non-negative branch lengths")
    return lengths


def _parent_indices(nodes: list[TreeNode]) -> np.ndarray:
    """[M] postorder index of each node's parent, -1 for the root."""
    position = {id(node): k for k, node in enumerate(nodes)}
    return np.array([-1 if n.parent is None else position[id(n.parent)] for n in nodes], dtype=np.int64)


def _tip_rows(nodes: list[TreeNode], asv_ids: list[str], source) -> np.ndarray:
    """[T] postorder index of the tip named by each ASV id; AamError for missing or duplicate names."""
    tip_index: dict[str, int] = {}
    duplicates = []
    for k, node in enumerate(nodes):
        if node.is_tip() and node.name is not None:
            if node.name in tip_index:
                duplicates.append(node.name)
            tip_index[node.name] = k
    if duplicates:
        raise AamError(f"{len(duplicates)} tip names occur more than once ({named_examples(duplicates)})",
                       source=source, hint="give a tree with unique tip names")
    if len(set(asv_ids)) != len(asv_ids):
        raise ValueError("asv_ids must be unique")
    missing = [a for a in asv_ids if a not in tip_index]
    if missing:
        raise AamError(f"{len(missing)} of the table's {len(asv_ids)} ASVs are not tips of the tree "
                       f"({named_examples(missing)})", source=source,
                       hint="give a tree covering every ASV of the table")
    return np.array([tip_index[a] for a in asv_ids], dtype=np.int64)


def _paths_to_root(tips: np.ndarray, parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ASV row, branch column) pairs for every branch on each tip's path to the root, one level at a time."""
    rows, cols = [], []
    asv = np.arange(len(tips))
    node = tips
    while len(node):
        rows.append(asv)
        cols.append(node)
        node = parents[node]
        keep = node >= 0
        asv, node = asv[keep], node[keep]
    return np.concatenate(rows), np.concatenate(cols)


def tree_incidence(tree: str, feature_ids: list[str]) -> sp.csr_matrix:
    """[F, M] incidence of ``tree``'s branches over the table's ASVs ``feature_ids`` (ASV f descends from
    branch m); a tree missing some of the ASVs is refused with their names."""
    return TreeIncidence.build(load_tree(tree), list(feature_ids), source=tree).incidence
