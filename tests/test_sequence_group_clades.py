"""Tree clades as sequence-group features (``--group-clades`` with ``--tree``): which clades are kept, the clade
features against a hand computation, a new ASV joining the clades of its nearest training ASV, and the CLI round
trip (``aam predict`` needs no tree) with its errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import torch
from click.testing import CliRunner
from scipy import sparse
from skbio import TreeNode

from aam.cli import cli
from aam.data.clades import select_clades
from aam.errors import AamError
from aam.models.sequence_groups import SequenceGroupsConfig, sequence_group_model
from aam.models.sequence_groups_fit import fit_sequence_groups
from aam.unifrac.tree import TreeIncidence
from aam.workflows.loading import load_predictor
from tests.test_sequence_groups import (
    _classification_data,
    _predicts_its_training_labels,
    clade_problem,
    features_and_batch,
    predictions_of,
    tokens_of,
)


def _tree(newick: str) -> TreeNode:
    return TreeNode.read(io.StringIO(newick))


def test_select_clades_keeps_each_set_of_asvs_once_and_drops_rare_and_trivial_clades():
    # x = {a, b}; y = {d, e} under a single-child node w (the same set twice); z = {c, d, e}; the root holds all
    tree = _tree("((a:1,b:1)x:1,(c:1,((d:1,e:1)y:1)w:1)z:1)root;")
    asvs = ["a", "b", "c", "d", "e"]
    incidence = TreeIncidence.build(tree, asvs).incidence
    counts = sparse.csr_matrix(np.array([  # 20 samples: y in every one, x in 2 (10%), z always (through c)
        [0, 0, 3, 1, 0]] * 18 + [[1, 0, 3, 0, 1], [0, 2, 3, 0, 1]], dtype=float))
    clades = select_clades(incidence, counts, min_prevalence=0.05)
    members = sorted(tuple(np.array(asvs)[clades[:, j].toarray().ravel() > 0]) for j in range(clades.shape[1]))
    assert members == [("a", "b"), ("c", "d", "e"), ("d", "e")]  # y once, no tips, no root
    rare = select_clades(incidence, counts, min_prevalence=0.2)  # x is held by 10% of the samples
    assert sorted(tuple(np.array(asvs)[rare[:, j].toarray().ravel() > 0]) for j in range(rare.shape[1])) == [
        ("c", "d", "e"), ("d", "e")]


def _clade_tree(sequences: list[str], clade_of: np.ndarray) -> str:
    """Newick: one clade per clade of the problem, its first three ASVs (the shared ones) a clade of their own."""
    parts = []
    for clade in np.unique(clade_of):
        names = [sequences[j] for j in np.flatnonzero(clade_of == clade)]
        parts.append("((" + ",".join(f"{n}:1" for n in names[:3]) + "):1," + ",".join(f"{n}:1" for n in names[3:])
                     + f")c{clade}:1")
    return "(" + ",".join(parts) + ")root;"


def test_clade_features_are_log_clade_shares_read_the_same_by_the_fit_and_the_forward_pass():
    counts, sequences, clade_of, labels, subjects, rng, variant, roots = clade_problem(seed=4)
    tokens = tokens_of(sequences)
    used = np.unique(sparse.csr_matrix(counts).indices)
    incidence = TreeIncidence.build(_tree(_clade_tree(sequences, clade_of)), [sequences[j] for j in used]).incidence
    clades = select_clades(incidence, sparse.csr_matrix(counts)[:, used])
    assert clades.shape == (len(used), 8)  # four clades and their shared cores
    config = SequenceGroupsConfig(group_counts=(2, 4), clusterings=1, classifier=True, out_dim=2,
                                  clades=clades.shape[1], clade_tips=len(used))
    assert config.n_features == 6 + 8
    model = sequence_group_model(config)
    fit_sequence_groups(model, sparse.csr_matrix(counts), tokens, labels, subjects, seed=3, clades=clades)
    features, batch = features_and_batch(model, counts, tokens)
    shares = counts[:, used] / counts.sum(1, keepdims=True)
    expected = np.log(shares @ clades.toarray() + config.pseudo_share)
    np.testing.assert_allclose(features[:, 6:] + model.feature_mean[6:].numpy(), expected, rtol=1e-10)
    logits = predictions_of(model, batch)  # the forward pass reads the same features as the fit
    np.testing.assert_allclose(logits, torch.log_softmax(model.readout(torch.from_numpy(features)), -1).detach().numpy(),
                               atol=1e-6)
    with torch.no_grad():  # a training ASV is its own tip; a new variant joins the clades of its nearest ASV
        assert (model.assign(torch.from_numpy(tokens[used]))[:, -1].numpy() == np.arange(len(used))).all()
        shared = np.flatnonzero(clade_of[used] >= 0)[::7]
        new = [variant(sequences[used[j]]) for j in shared]
        tips = model.assign(torch.from_numpy(tokens_of(new)))[:, -1].numpy()
    assert (clade_of[used][tips] == clade_of[used][shared]).all()  # the variant's own clade
    wrong = SequenceGroupsConfig(group_counts=(2, 4), clusterings=1, classifier=True, out_dim=2)
    try:
        fit_sequence_groups(sequence_group_model(wrong), sparse.csr_matrix(counts), tokens, labels, subjects, seed=3,
                            clades=clades)
    except AamError as err:
        assert "--group-clades" in str(err)
    else:
        raise AssertionError("a membership the config does not describe was accepted")


def _clade_task(tmp_path) -> tuple:
    """The classification table and metadata of the clade problem, and a Newick tree of its clades."""
    table, metadata = _classification_data(tmp_path)
    _, sequences, clade_of, *_ = clade_problem(seed=0)
    tree = tmp_path / "tree.nwk"
    tree.write_text(_clade_tree(sequences, clade_of) + "\n")
    return table, metadata, tree


def test_cli_group_clades_trains_predicts_without_the_tree_and_names_the_missing_tree(tmp_path):
    table, metadata, tree = _clade_task(tmp_path)
    common = ["train", "--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
              "--group-column", "subject", "--model-type", "sequence-groups", "--sequence-groups", "2",
              "--group-clusterings", "1", "--group-readout", "boosted", "--max-bp", "40", "--seed", "1", "--quiet"]
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [str(a) for a in [*common, "--group-clades", "--tree", tree, "--output-dir", out]])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["group_clades"] is True and config["model_config"]["clades"] == 8
    assert json.loads((out / "sequence_groups.json").read_text())["n_clades"] == 8
    model, _ = load_predictor(out / "checkpoints" / "best_model.pt")
    assert model.clade_membership.shape == (config["model_config"]["clade_tips"], 8)
    assert model.clade_membership.sum().item() > 0
    _predicts_its_training_labels(out, table, metadata, tmp_path / "predictions.tsv", batch_size=7)

    missing = CliRunner().invoke(cli, [str(a) for a in [*common, "--group-clades", "--output-dir", tmp_path / "x"]])
    assert missing.exit_code == 2 and "--group-clades" in missing.output and "--tree" in missing.output
    assert "Traceback" not in missing.output and not (tmp_path / "x" / "checkpoints").exists()
    _, sequences, clade_of, *_ = clade_problem(seed=0)
    partial = tmp_path / "partial.nwk"  # a tree without some of the table's ASVs
    partial.write_text(_clade_tree(sequences[:-5], clade_of[:-5]) + "\n")
    result = CliRunner().invoke(cli, [str(a) for a in [*common, "--group-clades", "--tree", partial,
                                                       "--output-dir", tmp_path / "y"]])
    assert result.exit_code == 2 and "not tips of the tree" in result.output and "Traceback" not in result.output
    refused = CliRunner().invoke(cli, [str(a) for a in ["train", "--table", table, "--metadata", metadata,
                                                        "--metadata-column", "disease", "--group-clades", "--tree",
                                                        tree, "--output-dir", tmp_path / "z"]])
    assert refused.exit_code == 2 and "is an option of --model-type sequence-groups" in refused.output


def test_clade_baselines_blend_with_the_model_and_predict_without_the_tree(tmp_path):
    """--blend-baselines clr-linear-clades,boosted-clades (the tree-aware baselines of session 24) with
    --group-clades: the saved baselines read the clades they kept at training time, so aam predict --forest
    needs no tree; without --tree they are refused before any data is read."""
    from aam.baselines.store import load_forest, predict_forest

    table, metadata, tree = _clade_task(tmp_path)
    common = ["train", "--table", table, "--metadata", metadata, "--metadata-column", "disease", "--classifier",
              "--group-column", "subject", "--model-type", "sequence-groups", "--sequence-groups", "2",
              "--group-clusterings", "1", "--max-bp", "40", "--seed", "1", "--quiet", "--group-clades",
              "--blend-baselines", "clr-linear-clades,boosted-clades", "--blend-weights", "equal"]
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [str(a) for a in [*common, "--tree", tree, "--output-dir", out]])
    assert result.exit_code == 0, result.output
    bundle = load_forest(out / "forest.joblib")
    assert bundle["baseline"] == "clr-linear-clades+boosted-clades"
    boosted = bundle["model"].members["boosted-clades"]
    assert boosted.named_steps["clades"].membership_.shape[1] == 8  # the 8 clades of the tree, as the model's
    ids = pd.read_csv(metadata, sep="\t", dtype=str)["sample_id"].tolist()
    trees = predict_forest(bundle, str(table), ids)
    truth = pd.read_csv(metadata, sep="\t", dtype=str).set_index("sample_id").loc[ids, "disease"]
    assert (trees.set_index("sample_id").loc[ids, "prediction"] == truth).mean() > 0.9
    missing = CliRunner().invoke(cli, [str(a) for a in [*common[:-6], "--blend-baselines", "boosted-clades",
                                                        "--output-dir", tmp_path / "x"]])
    assert missing.exit_code == 2 and "--blend-baselines" in missing.output and "--tree" in missing.output
    assert "Traceback" not in missing.output and not (tmp_path / "x").exists()


def test_cross_validate_runs_the_clade_baselines_on_the_same_folds(tmp_path):
    table, metadata, tree = _clade_task(tmp_path)
    common = ["cross-validate", "--table", table, "--metadata", metadata, "--metadata-column", "disease",
              "--classifier", "--group-column", "subject", "--model-type", "sequence-groups", "--sequence-groups",
              "2", "--group-clusterings", "1", "--max-bp", "40", "--seed", "1", "--quiet", "--n-folds", "2",
              "--baselines", "forest,boosted-clades"]
    refused = CliRunner().invoke(cli, [str(a) for a in [*common, "--output-dir", tmp_path / "x"]])
    assert refused.exit_code == 2 and "--baselines" in refused.output and "--tree" in refused.output
    out = tmp_path / "cv"
    result = CliRunner().invoke(cli, [str(a) for a in [*common, "--tree", tree, "--output-dir", out]])
    assert result.exit_code == 0, result.output
    oof = pd.read_csv(out / "oof_predictions.tsv", sep="\t", dtype={"sample_id": str})
    assert {"boosted-clades_prediction", "forest_prediction", "blend_prediction"} <= set(oof.columns)
    assert (oof["boosted-clades_prediction"] == oof["actual"]).mean() > 0.8
