"""A model that cannot memorise people: a linear read-out of the log-ratio composition of sequence groups.

Every ASV is described by its nucleotide sequence alone (the frequencies of its k-mers, and by default the
nucleotide at each position: :func:`sequence_profiles`) and assigned to the nearest of K group centres, at
several resolutions (e.g. 8, 16, 32 and 64 groups), each clustered several times from different starts. A
sample is the centred log shares of those groups (compositional data analysis's centred log-ratio), centred
over the training samples, and a linear layer reads the prediction off them. The centres and the read-out are
fitted outside gradient training (:mod:`aam.models.sequence_groups_fit`: k-means on the training ASVs, a
shrunk linear model whose strength is chosen by grouped inner cross-validation); this module only evaluates
the fitted model on a batch, so ``aam predict`` and ``aam cross-validate`` run it like any other checkpoint.

Beside the k-means groups, the most widespread training ASVs can each head a group of their own (``anchors``):
every ASV joins the anchor nearest to its profile, so the finest resolution is one ASV and its close variants.

Given a phylogenetic tree (``--group-clades``), the clades of the tree over the training ASVs add one feature
each: the sample's log share of the clade. Clades are nested, so their shares are read as they are (not centred
over the clades). An ASV joins the clades of the training ASV nearest to its profile (itself, when it was in
training).

An ASV never seen in training still joins the group of the closest sequence profile, so a person's private
variant of a clade counts towards that clade (and a variant of a widespread ASV towards that ASV): what a
forest on ASV columns cannot do. The model has one weight per group and resolution (a few hundred, plus one per
anchor), shrunk together, which is what keeps it from recognising the training people.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from aam.data.vocabulary import A, T
from aam.models.config import (  # noqa: F401 -- re-exported: the model's config and name live torch-free
    GROUP_READOUTS,
    MAX_GROUP_KMER,
    MODEL_TYPE,
    TREE_READOUTS,
    SequenceGroupsConfig,
)
from aam.models.sample_encoder import relative_abundance


def kmer_profiles(tokens: Tensor, k: int) -> Tensor:
    """[U, L] ASV tokens (START first, PAD after the end) -> [U, 4^k] float64 k-mer frequencies.

    Only windows of k unambiguous nucleotides count (a window with N or padding is skipped); a sequence shorter
    than k has an all-zero profile.
    """
    bases = tokens[:, 1:].long() - A  # A C G T -> 0..3; anything else out of range
    if bases.shape[1] < k:
        return torch.zeros(tokens.shape[0], 4 ** k, dtype=torch.float64, device=tokens.device)
    windows = bases.unfold(1, k, 1)  # [U, W, k]
    valid = ((windows >= 0) & (windows <= T - A)).all(dim=-1)  # [U, W]
    place = 4 ** torch.arange(k - 1, -1, -1, device=tokens.device)
    codes = (windows.clamp(0, 3) * place).sum(dim=-1)  # [U, W]
    profiles = torch.zeros(tokens.shape[0], 4 ** k, dtype=torch.float64, device=tokens.device)
    profiles.scatter_add_(1, codes, valid.to(torch.float64))
    return profiles / profiles.sum(dim=1, keepdim=True).clamp_min(1.0)


def position_profiles(tokens: Tensor, positions: int) -> Tensor:
    """[U, L] ASV tokens -> [U, 4 * positions] float64: the one-hot nucleotide at each of the first
    ``positions`` positions (all zero where the sequence has N or has ended), over sqrt(positions), so a
    full-length ASV has unit length and the squared distance of two such ASVs is twice their share of
    differing positions."""
    bases = tokens[:, 1:positions + 1].long() - A  # [U, <= positions]
    onehot = torch.zeros(tokens.shape[0], positions, 4, dtype=torch.float64, device=tokens.device)
    valid = (bases >= 0) & (bases <= T - A)
    onehot[:, :bases.shape[1]].scatter_(2, bases.clamp(0, 3).unsqueeze(-1),
                                        valid.unsqueeze(-1).to(torch.float64))
    return onehot.reshape(tokens.shape[0], -1) / positions ** 0.5


def sequence_profiles(tokens: Tensor, kmer_size: int, positions: int) -> Tensor:
    """[U, L] tokens -> [U, 4^k + 4 * positions] float64 ASV profiles. With ``positions`` 0, the k-mer
    frequencies (:func:`kmer_profiles`); otherwise the k-mer frequencies scaled to unit length, then
    :func:`position_profiles`: two views of equal weight, the k-mers robust to shifts, the positions exact
    about substitutions."""
    kmers = kmer_profiles(tokens, kmer_size)
    if not positions:
        return kmers
    kmers = kmers / kmers.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return torch.cat([kmers, position_profiles(tokens, positions)], dim=1)


TIP_BLOCK = 1024  # ASVs per block of distances to the clade tips


def diversity_features(shares: Tensor) -> Tensor:
    """[B, U] ASV shares of each sample (rows sum to one) -> [B, 2]: the Shannon entropy of the shares (nats)
    and the log of one plus the number of ASVs present."""
    entropy = torch.special.entr(shares).sum(dim=1)  # -p log p, 0 where p is 0
    return torch.stack([entropy, torch.log1p((shares > 0).sum(dim=1).to(shares.dtype))], dim=1)


class SequenceGroupComposition(nn.Module):
    """Batch -> ``prediction`` [B, out_dim] (log-probabilities for a classifier, model units for regression).

    Buffers (filled by the fit, saved in the checkpoint): ``centres`` [sum K, profile_width] (every
    clustering's centres stacked, then the anchors' profiles), ``feature_mean`` [n_features] (the features'
    mean over the training samples: sum K, then the clades and the diversity features when the config has
    them), and with clades ``clade_profiles`` [clade_tips, profile_width] (the training ASVs' profiles) and
    ``clade_membership`` [clade_tips, clades] (1 where the ASV is in the clade); the read-out is ``readout`` (a
    Linear layer).
    """

    def __init__(self, config: SequenceGroupsConfig):
        super().__init__()
        self.config = config
        width = config.n_features
        self.register_buffer("centres", torch.zeros(sum(config.resolutions), config.profile_width,
                                                    dtype=torch.float64))
        self.register_buffer("feature_mean", torch.zeros(width, dtype=torch.float64))
        if config.clades:
            self.register_buffer("clade_profiles", torch.zeros(config.clade_tips, config.profile_width,
                                                               dtype=torch.float64))
            self.register_buffer("clade_membership", torch.zeros(config.clade_tips, config.clades,
                                                                 dtype=torch.float64))
        self.readout = nn.Linear(width, config.out_dim, dtype=torch.float64)

    def profiles(self, tokens: Tensor) -> Tensor:
        """[U, L] tokens -> [U, profile_width] the profiles the centres describe (:func:`sequence_profiles`)."""
        return sequence_profiles(tokens, self.config.kmer_size, self.config.positions)

    def assign(self, tokens: Tensor) -> Tensor:
        """[U, L] tokens -> [U, R] index of each ASV's nearest centre in each clustering (within it), then,
        with clades, one more column: the index of its nearest clade tip."""
        return self.nearest_groups(self.profiles(tokens))

    def nearest_groups(self, profiles: Tensor) -> Tensor:
        """[U, profile_width] profiles -> [U, R] index of the nearest centre in each clustering (within it),
        and with clades [U, R + 1]: the last column the nearest clade tip (:meth:`nearest_tips`)."""
        columns, start = [], 0
        for count in self.config.resolutions:
            centres = self.centres[start:start + count]
            columns.append(torch.cdist(profiles, centres, compute_mode="donot_use_mm_for_euclid_dist").argmin(1))
            start += count
        if self.config.clades:
            columns.append(self.nearest_tips(profiles))
        return torch.stack(columns, dim=1)

    def nearest_tips(self, profiles: Tensor) -> Tensor:
        """[U, profile_width] -> [U] index of the nearest clade tip (a training ASV: itself when it is one),
        in blocks of ASVs so the distance matrix stays small. The distances go through a matrix product (fast;
        rounding of about 1e-15, far below the 2 / positions between two profiles that differ)."""
        blocks = [torch.cdist(profiles[i:i + TIP_BLOCK], self.clade_profiles,
                              compute_mode="use_mm_for_euclid_dist").argmin(1)
                  for i in range(0, profiles.shape[0], TIP_BLOCK)]
        return torch.cat(blocks) if blocks else torch.zeros(0, dtype=torch.int64, device=profiles.device)

    def clade_log_shares(self, tips: Tensor, shares: Tensor) -> Tensor:
        """[U] nearest clade tip of each ASV and [B, U] ASV shares -> [B, clades] log clade shares."""
        return torch.log(shares @ self.clade_membership[tips] + self.config.pseudo_share)

    def log_shares(self, assignments: Tensor, shares: Tensor) -> Tensor:
        """[U, R] group of each ASV and [B, U] share of each ASV in each sample -> [B, sum K] log group shares,
        each clustering centred over its own groups unless the config says ``centred=False``."""
        parts = []
        for r, count in enumerate(self.config.resolutions):
            onehot = nn.functional.one_hot(assignments[:, r], count).to(shares.dtype)  # [U, K]
            logs = torch.log(shares @ onehot + self.config.pseudo_share)  # [B, K]
            parts.append(logs - logs.mean(dim=1, keepdim=True) if self.config.centred else logs)
        return torch.cat(parts, dim=1)

    def raw_features(self, assignments: Tensor, shares: Tensor) -> Tensor:
        """[U, R] groups (and tips) and [B, U] ASV shares -> [B, n_features]: :meth:`log_shares`, then, when
        the config asks for them, :meth:`clade_log_shares` and :func:`diversity_features`."""
        parts = [self.log_shares(assignments, shares)]
        if self.config.clades:
            parts.append(self.clade_log_shares(assignments[:, -1], shares))
        if self.config.diversity:
            parts.append(diversity_features(shares))
        return torch.cat(parts, dim=1)

    def features(self, assignments: Tensor, shares: Tensor) -> Tensor:
        """The read-out's input: :meth:`raw_features` less their mean over the training samples."""
        return self.raw_features(assignments, shares) - self.feature_mean

    def forward(self, tokens: Tensor, asv_index: Tensor, asv_mask: Tensor, counts: Tensor | None = None,
                **_: Any) -> dict[str, Tensor]:
        """Every argument of a transformer model is accepted; categoricals, masks and caches are not used."""
        weights = relative_abundance(None if counts is None else counts.to(torch.float64), asv_mask)  # [B, S]
        shares = torch.zeros(asv_index.shape[0], tokens.shape[0], dtype=torch.float64, device=tokens.device)
        shares.scatter_add_(1, asv_index, weights.to(torch.float64))  # [B, U]; padding adds 0 to row 0
        logits = self.read_out(self.features(self.assign(tokens), shares))
        if self.config.classifier:
            logits = torch.log_softmax(logits, dim=-1)
        return {"prediction": logits.float()}

    def read_out(self, features: Tensor) -> Tensor:
        """[B, n_features] -> [B, out_dim] logits (classifiers) or predictions in model units."""
        return self.readout(features)


ABSENT_CLASS_LOGIT = -30.0  # a class no training sample holds is never predicted


class TreeGroupComposition(SequenceGroupComposition):
    """The same features, read by fitted scikit-learn trees (``boosted``: HistGradientBoosting; ``forest``: a
    random forest; fitted by :mod:`aam.models.sequence_groups_fit`) instead of the linear layer, which stays
    unused. The fitted trees travel in the module's extra state, so the checkpoint holds them; they run on the
    CPU."""

    def __init__(self, config: SequenceGroupsConfig):
        super().__init__(config)
        self.trees: Any = None
        with torch.no_grad():  # unused: zeros, so the checkpoint does not depend on the random initialisation
            self.readout.weight.zero_()
            self.readout.bias.zero_()

    def read_out(self, features: Tensor) -> Tensor:
        if self.trees is None:
            raise RuntimeError("the tree read-out has not been fitted")
        values = features.detach().cpu().numpy()
        if not self.config.classifier:
            return torch.from_numpy(self.trees.predict(values)).reshape(-1, 1).to(features)
        probabilities = torch.from_numpy(self.trees.predict_proba(values))  # [B, classes seen in training]
        logits = torch.full((values.shape[0], self.config.out_dim), ABSENT_CLASS_LOGIT, dtype=torch.float64)
        classes = torch.as_tensor(self.trees.classes_, dtype=torch.int64)
        logits[:, classes] = torch.log(probabilities.clamp_min(1e-12))
        return logits.to(features)

    def get_extra_state(self) -> Any:
        return {"trees": self.trees}

    def set_extra_state(self, state: Any) -> None:
        self.trees = state["trees"]


def sequence_group_model(config: SequenceGroupsConfig) -> SequenceGroupComposition:
    """The model of ``config``: the linear read-out, or trees (boosted or a forest)."""
    return TreeGroupComposition(config) if config.readout in TREE_READOUTS else SequenceGroupComposition(config)
