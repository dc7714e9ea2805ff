"""``aam explain``: occlusion is exact (equal to predicting a table without the ASV), ASVs of the clade that drives
the target rank on top for a transformer and a sequence-groups model, the deletion check moves answers more for
top-attributed ASVs than for random ones, ensembles average member effects, classifiers get per-class effects,
taxonomy (TSV and .qza) labels the ASVs, categorical models get fusion outputs, errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score
from test_qiime2 import make_artifact

from aam.cli import cli
from aam.data.dataset import AmpliconData, BatchCollator
from aam.data.synthetic import make_clade_driven_dataset, write_synthetic_dataset
from aam.data.taxonomy import read_taxonomy, short_name
from aam.errors import AamError
from aam.workflows.attribution import answer_reader, gradient_effects, occlusion_effects
from aam.workflows.inputs import load_amplicon_data
from aam.workflows.loading import load_predictor
from aam.workflows.predict import member_inputs

SMALL = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "32",
         "--batch-size", "16", "--device", "cpu", "--quiet"]
N_SAMPLES, N_ASVS, SEED = 96, 30, 11


def run_cli(*args, code: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def clade_data(tmp_path_factory) -> dict:
    """A table whose target is driven by the share of the minor clade 0 (plus a categorical ``site`` and a
    3-class ``label``), with a taxonomy naming each ASV's clade."""
    root = tmp_path_factory.mktemp("explain_data")
    dataset = make_clade_driven_dataset(n_samples=N_SAMPLES, n_asvs=N_ASVS, seed=SEED)
    paths = write_synthetic_dataset(root, dataset)
    lineages = [f"k__Bacteria; p__Clade{c}; g__Genus{c}_{i}" for i, c in enumerate(dataset.clades)]
    taxonomy = root / "taxonomy.tsv"
    pd.DataFrame({"Feature ID": dataset.asv_ids, "Taxon": lineages, "Confidence": 0.9}).to_csv(
        taxonomy, sep="\t", index=False)
    return {**paths, "taxonomy": taxonomy, "drivers": {a for a, c in zip(dataset.asv_ids, dataset.clades) if c == 0},
            "clade_of": dict(zip(dataset.asv_ids, dataset.clades.tolist()))}


@pytest.fixture(scope="module")
def models(clade_data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain_models")
    common = ["--table", clade_data["table"], "--metadata", clade_data["metadata"], "--seed", 1]
    run_cli("train", *common, "--metadata-column", "target", "--output-dir", root / "transformer",
            "--preset", "small-data", "--device", "cpu", "--quiet")
    run_cli("train", *common, "--metadata-column", "target", "--output-dir", root / "groups",
            "--model-type", "sequence-groups", "--sequence-groups", "4,8", "--quiet")  # 30 ASVs: coarse groups
    run_cli("train", *common, "--metadata-column", "label", "--classifier", "--output-dir", root / "classifier",
            *SMALL, "--epochs", 2)
    for fusion in ("gmu", "cross-attention"):
        run_cli("train", *common, "--metadata-column", "target", "--categorical-columns", "site",
                "--categorical-fusion", fusion, "--output-dir", root / fusion, *SMALL, "--epochs", 1)
    return {name: root / name / "checkpoints" / "best_model.pt"
            for name in ("transformer", "groups", "classifier", "gmu", "cross-attention")}


@pytest.fixture(scope="module")
def explained(clade_data, models, tmp_path_factory) -> dict[str, Path]:
    """``aam explain`` of the regression models (with the taxonomy TSV) on their training table."""
    root = tmp_path_factory.mktemp("explained")
    out = {}
    for name in ("transformer", "groups"):
        run_cli("explain", "--model", models[name], "--table", clade_data["table"], "--taxonomy",
                clade_data["taxonomy"], "--output-dir", root / name, "--device", "cpu", "--quiet")
        out[name] = root / name
    return out


def one_batch(model_path: Path, table: str, data: AmpliconData | None = None):
    model, info = load_predictor(model_path)
    data = data if data is not None else load_amplicon_data(table, max_bp=info.max_bp)
    dataset, decoder = member_inputs(info, data, None, None, None)
    batch = BatchCollator(data.tokens, data.sample_ids)([dataset[i] for i in range(len(dataset))])
    return model, batch, answer_reader(decoder), data


@pytest.mark.parametrize("name", ["transformer", "groups"])
def test_occlusion_equals_predicting_the_table_without_the_asv(models, clade_data, name):
    model, batch, read, data = one_batch(models[name], clade_data["table"])
    full, effects = occlusion_effects(model, batch, read)
    columns = batch.asv_ids[batch.asv_index].numpy()
    for b, s in [(0, 0), (5, 3), (17, 8)]:
        dense = data.counts.toarray()
        row, column = int(batch.sample_index[b]), int(columns[b, s])
        dense[row, column] = 0
        without = AmpliconData(dense, data.tokens, data.sample_ids, data.asv_ids)
        _, batch_without, _, _ = one_batch(models[name], clade_data["table"], without)
        with torch.no_grad():
            answer = read(model(batch_without.tokens, batch_without.asv_index, batch_without.asv_mask,
                                counts=batch_without.counts)["prediction"], batch_without.sample_index.numpy())
        assert effects[b, s, 0] == pytest.approx(full[b, 0] - answer[b, 0], abs=1e-4)
    assert np.isnan(effects[~batch.asv_mask.numpy()]).all()


@pytest.mark.parametrize("name", ["transformer", "groups"])
def test_asvs_of_the_driving_clade_rank_on_top(explained, clade_data, name):
    table = pd.read_csv(explained[name] / "asv_importance.tsv", sep="\t")
    driving = table["feature_id"].isin(clade_data["drivers"]).to_numpy()
    assert driving[:5].sum() >= 4, table.head(8)  # 5 drivers of 30 ASVs
    auroc = roc_auc_score(driving, table["importance"])
    assert auroc > 0.9 and auroc > roc_auc_score(driving, table["mean_relative_abundance"]) + 0.3
    assert (table.loc[driving, "effect"] > 0).all()  # clade 0 raises the target
    assert set(table.loc[:2, "direction"][driving[:3]]) == {"+"}
    assert table["taxon"].str.contains("p__Clade0").to_numpy().tolist() == driving.tolist()  # from the TSV
    assert (table["rank"] == np.arange(1, len(table) + 1)).all()
    assert table["importance"].is_monotonic_decreasing
    assert ((table["sign_agreement"] >= 0) & (table["sign_agreement"] <= 1)).all()
    assert (table["n_read"] <= table["n_samples"]).all() and (table["n_samples"] <= N_SAMPLES).all()


@pytest.mark.parametrize("name", ["transformer", "groups"])
def test_deletion_check_top_attributed_asvs_move_answers_more_than_random_ones(explained, name):
    deletion = pd.read_csv(explained[name] / "deletion_check.tsv", sep="\t")
    assert set(deletion["k"]) == {1, 5, 10}
    drop = deletion[deletion["measure"] == "mean drop of the answer"]
    assert (drop["top"] > drop["random"]).all() and (drop["top"] > 0).all()
    size = deletion[(deletion["measure"] == "mean |change|") & (deletion["k"] == 1)]
    assert float(size["ratio"].iloc[0]) > 1.5
    summary = json.loads((explained[name] / "summary.json").read_text())
    assert summary["method"] == "occlusion" and summary["n_samples"] == N_SAMPLES
    assert len(summary["deletion_check"]) == len(deletion)
    assert (explained[name] / "plots" / "top_asvs.png").stat().st_size > 5000
    assert json.loads((explained[name] / "config.json").read_text())["command"] == "explain"


def test_sample_top_asvs_are_each_samples_largest_effects(explained):
    top = pd.read_csv(explained["transformer"] / "sample_top_asvs.tsv", sep="\t")
    assert top["sample_id"].nunique() == N_SAMPLES
    assert (top.groupby("sample_id")["rank"].max() == 10).all()
    sizes = top["effect"].abs().to_numpy().reshape(N_SAMPLES, 10)
    assert (np.diff(sizes, axis=1) <= 1e-9).all()
    assert ((top["relative_abundance"] > 0) & (top["relative_abundance"] <= 1)).all()


def test_an_ensemble_averages_its_members_effects(explained, models, clade_data, tmp_path):
    run_cli("explain", "--model", models["transformer"], "--model", models["groups"], "--table", clade_data["table"],
            "--output-dir", tmp_path / "both", "--device", "cpu", "--quiet")
    both = pd.read_csv(tmp_path / "both" / "asv_importance.tsv", sep="\t").set_index("feature_id")
    singles = [pd.read_csv(explained[n] / "asv_importance.tsv", sep="\t").set_index("feature_id")
               for n in ("transformer", "groups")]
    expected = (singles[0]["effect"] + singles[1]["effect"].reindex(singles[0].index)) / 2
    assert np.allclose(both.loc[expected.index, "effect"], expected, atol=1e-4)
    assert (both["importance_member_sd"] >= 0).all()
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert -1 <= summary["member_rank_correlation"] <= 1


@pytest.mark.parametrize("method", ["occlusion", "gradient"])
def test_classifier_effects_are_per_class_and_sum_to_zero(models, clade_data, method):
    model, batch, read, _ = one_batch(models["classifier"], clade_data["table"])
    full, effects = (occlusion_effects if method == "occlusion" else gradient_effects)(model, batch, read)
    assert full.shape == (N_SAMPLES, 6) and np.allclose(full.sum(1), 1, atol=1e-5)  # 6 community types
    real = batch.asv_mask.numpy()
    assert effects.shape == (*real.shape, 6)
    assert np.isfinite(effects[real]).all()
    assert np.allclose(effects[real].sum(-1), 0, atol=1e-5)  # probabilities sum to one with or without the ASV


def test_classifier_output_names_the_classes(models, clade_data, tmp_path):
    run_cli("explain", "--model", models["classifier"], "--table", clade_data["table"], "--output-dir", tmp_path,
            "--device", "cpu", "--quiet", "--top-per-sample", 3)
    table = pd.read_csv(tmp_path / "asv_importance.tsv", sep="\t")
    classes = sorted(pd.read_csv(clade_data["metadata"], sep="\t")["label"].astype(str).unique())
    assert [c for c in table.columns if c.startswith("effect_")] == [f"effect_{c}" for c in classes]
    assert set(table["raises"]) <= set(classes)
    top = pd.read_csv(tmp_path / "sample_top_asvs.tsv", sep="\t")
    assert set(top["prediction"].astype(str)) <= set(classes) and top["rank"].max() == 3


def test_gradient_method_runs_and_is_scored_by_the_deletion_check(models, clade_data, tmp_path):
    run_cli("explain", "--model", models["transformer"], "--table", clade_data["table"], "--output-dir", tmp_path,
            "--method", "gradient", "--device", "cpu", "--quiet")
    table = pd.read_csv(tmp_path / "asv_importance.tsv", sep="\t")
    assert np.isfinite(table["importance"]).all() and len(table) == N_ASVS
    assert json.loads((tmp_path / "summary.json").read_text())["method"] == "gradient"
    assert len(pd.read_csv(tmp_path / "deletion_check.tsv", sep="\t")) == 6


@pytest.mark.parametrize("fusion,column", [("gmu", "sequence_gate"), ("cross-attention", "attention_site")])
def test_categorical_models_report_category_effects_and_fusion_values(models, clade_data, tmp_path, fusion, column):
    run_cli("explain", "--model", models[fusion], "--table", clade_data["table"], "--metadata",
            clade_data["metadata"], "--output-dir", tmp_path, "--device", "cpu", "--quiet")
    effects = pd.read_csv(tmp_path / "categorical_effects.tsv", sep="\t")
    sites = set(pd.read_csv(clade_data["metadata"], sep="\t")["site"])
    assert set(effects["column"]) == {"site"} and set(effects["level"]) == sites
    assert effects["n_samples"].sum() == N_SAMPLES and (effects["importance"] >= 0).all()
    values = pd.read_csv(tmp_path / "fusion.tsv", sep="\t")
    assert set(values["level"]) == sites and values[column].between(0, 1).all()


@pytest.mark.parametrize("version", [5, 6])
def test_taxonomy_artifact_labels_like_the_tsv(clade_data, models, explained, tmp_path, version):
    qza = make_artifact(tmp_path / "taxonomy.qza", "FeatureData[Taxonomy]", "TSVTaxonomyDirectoryFormat",
                        {"taxonomy.tsv": Path(clade_data["taxonomy"]).read_bytes()}, version=version)
    assert read_taxonomy(qza) == read_taxonomy(clade_data["taxonomy"])
    run_cli("explain", "--model", models["groups"], "--table", clade_data["table"], "--taxonomy", qza,
            "--output-dir", tmp_path / "out", "--device", "cpu", "--quiet")
    from_qza = pd.read_csv(tmp_path / "out" / "asv_importance.tsv", sep="\t")
    from_tsv = pd.read_csv(explained["groups"] / "asv_importance.tsv", sep="\t")
    assert from_qza["taxon"].tolist() == from_tsv["taxon"].tolist()


def test_taxonomy_reader_names_and_errors(tmp_path):
    assert short_name("k__Bacteria; p__Firmicutes; g__Blautia; s__") == "g__Blautia"
    assert short_name("d__Bacteria;p__Bacillota;g__uncultured") == "p__Bacillota"
    assert short_name("Unassigned") == "Unassigned"
    duplicated = tmp_path / "dup.tsv"
    duplicated.write_text("Feature ID\tTaxon\nA\tk__x\nA\tk__y\n")
    with pytest.raises(AamError, match="appears twice"):
        read_taxonomy(duplicated)
    q2 = tmp_path / "q2.tsv"
    q2.write_text("feature-id\tconfidence\ttaxonomy\n#q2:types\tnumeric\tcategorical\nA\t0.9\tk__x; g__y\n")
    assert read_taxonomy(q2) == {"A": "k__x; g__y"}
    headerless = tmp_path / "headerless.tsv"  # a lineage table without its header: its first row is data
    headerless.write_text("A\tk__x; g__y\nB\tk__x; g__z\n")
    with pytest.raises(AamError, match="'Feature ID' column first and a 'Taxon' column; found 'A', 'k__x; g__y'"):
        read_taxonomy(headerless)
    other = tmp_path / "other.tsv"
    other.write_text("sample\tcount\nA\t3\n")
    with pytest.raises(AamError, match="found 'sample', 'count'"):
        read_taxonomy(other)


def test_errors_are_one_line_and_leave_nothing(models, clade_data, tmp_path):
    cases = [
        (["--model", models["groups"], "--method", "gradient"], "--method"),
        (["--model", models["gmu"]], "--metadata"),
        (["--model", models["groups"], "--top-asvs", 0], "--top-asvs"),
        (["--model", models["groups"], "--taxonomy", tmp_path / "missing.tsv"], "missing.tsv"),
    ]
    wrong = make_artifact(tmp_path / "table.qza", "FeatureTable[Frequency]", "BIOMV210DirFmt",
                          {"feature-table.biom": b"x"})
    cases.append((["--model", models["groups"], "--taxonomy", wrong], "FeatureData[Taxonomy]"))
    no_columns = tmp_path / "no_columns.tsv"
    no_columns.write_text("asv_name\tlineage\nA\tk__x\n")
    cases.append((["--model", models["groups"], "--taxonomy", no_columns], "no_columns.tsv"))
    for i, (args, named) in enumerate(cases):
        out = tmp_path / f"out{i}"
        result = run_cli("explain", *args, "--table", clade_data["table"], "--output-dir", out, "--device", "cpu",
                         "--quiet", code=2)
        assert named in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists()


def test_samples_file_explains_a_subset(models, clade_data, tmp_path):
    ids = pd.read_csv(clade_data["metadata"], sep="\t")["sample_id"].astype(str).tolist()[:10]
    listed = tmp_path / "ids.txt"
    listed.write_text("\n".join(ids) + "\n")
    run_cli("explain", "--model", models["groups"], "--table", clade_data["table"], "--samples", listed,
            "--output-dir", tmp_path / "out", "--device", "cpu", "--quiet")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_samples"] == 10
    assert set(pd.read_csv(tmp_path / "out" / "sample_top_asvs.tsv", sep="\t")["sample_id"].astype(str)) == set(ids)
    assert (pd.read_csv(tmp_path / "out" / "asv_importance.tsv", sep="\t")["n_samples"] <= 10).all()
    listed.write_text("S001\nnot_a_sample\n")
    result = run_cli("explain", "--model", models["groups"], "--table", clade_data["table"], "--samples", listed,
                     "--output-dir", tmp_path / "bad", "--device", "cpu", "--quiet", code=2)
    assert "ids.txt" in result.output and "not_a_sample" in result.output and not (tmp_path / "bad").exists()


def test_group_column_counts_groups_and_the_share_on_single_group_asvs(models, clade_data, tmp_path):
    metadata = pd.read_csv(clade_data["metadata"], sep="\t")
    run_cli("explain", "--model", models["groups"], "--table", clade_data["table"], "--metadata",
            clade_data["metadata"], "--group-column", "site", "--output-dir", tmp_path / "out", "--device", "cpu",
            "--quiet")
    table = pd.read_csv(tmp_path / "out" / "asv_importance.tsv", sep="\t")
    assert table["n_groups"].between(1, metadata["site"].nunique()).all()
    data = load_amplicon_data(clade_data["table"])
    site = metadata.set_index(metadata["sample_id"].astype(str))["site"]
    dense = pd.DataFrame(data.counts.toarray(), index=data.sample_ids, columns=data.asv_ids)
    expected = {a: site[dense.index[dense[a] > 0]].nunique() for a in table["feature_id"]}
    assert table.set_index("feature_id")["n_groups"].to_dict() == expected
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    single = table.loc[table["n_groups"] == 1, "importance"].sum() / table["importance"].sum()
    assert summary["group_column"] == "site" and summary["importance_share_single_group"] == pytest.approx(single)
    for args, flag in ([["--group-column", "site"], "--metadata"],
                       [["--metadata", clade_data["metadata"], "--group-column", "nope"], "--group-column"]):
        result = run_cli("explain", "--model", models["groups"], "--table", clade_data["table"], *args,
                         "--output-dir", tmp_path / "bad", "--quiet", code=2)
        assert flag in result.output and not (tmp_path / "bad").exists()
