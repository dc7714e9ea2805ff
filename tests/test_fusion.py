"""Categorical fusion: the embedder, each fusion mode's contract, and that each one learns from metadata."""

from __future__ import annotations

import pytest
import torch

from aam.data.vocabulary import PAD, START
from aam.models import FUSIONS, EncoderConfig, PredictorConfig, build_model
from aam.models.config import GMU_GATES
from aam.models.fusion import (
    AddFusion,
    CategoricalEmbedder,
    CategoricalFusion,
    ConcatFusion,
    ConditionalOutputScaling,
    CrossAttentionFusion,
    GMUFusion,
    PerceiverFusion,
)

B, S, D, E = 3, 5, 16, 4




def _inputs(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, S, D, generator=g, dtype=dtype)
    asv_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    hidden = hidden * asv_mask.unsqueeze(-1)
    embedder = CategoricalEmbedder((3, 4), E).to(dtype)
    metadata, present = embedder(torch.tensor([[1, 2], [2, 0], [0, 0]]))
    return hidden, asv_mask, metadata, present


def test_embedder_index_zero_is_the_zero_vector():
    embedder = CategoricalEmbedder((3, 4), E)
    tokens, present = embedder(torch.tensor([[0, 3], [2, 0]]))
    assert tokens.shape == (2, 2, E)
    assert torch.all(tokens[0, 0] == 0) and torch.all(tokens[1, 1] == 0)
    assert present.tolist() == [[False, True], [True, False]]
    torch.testing.assert_close(tokens[0, 1], embedder.embeddings[1].weight[3])


def test_registry_matches_config_choices_and_stages():
    assert set(FUSIONS) == {"concat", "add", "gmu", "cross-attention", "perceiver"}
    stages = {name: cls.stage for name, cls in FUSIONS.items()}
    assert stages == {"concat": "sequence", "add": "sequence", "gmu": "pooled", "cross-attention": "sequence",
                      "perceiver": "replace"}
    for name in FUSIONS:
        PredictorConfig(categorical_cardinalities=(3,), categorical_fusion=name)


@pytest.mark.parametrize("fusion_cls", [ConcatFusion, AddFusion])
def test_broadcast_fusions(fusion_cls):
    hidden, asv_mask, metadata, present = _inputs()
    fusion = fusion_cls(D, E, 2)
    fused, diagnostics = fusion(hidden, asv_mask, metadata, present)
    assert fused.shape == (B, S, D) and diagnostics == {}
    assert torch.all(fused[~asv_mask] == 0)
    # unknown metadata (all zero tokens) leaves the base embeddings unchanged at initialisation
    torch.testing.assert_close(fused[2, 0], hidden[2, 0])
    # the same update at every position of a sample
    torch.testing.assert_close(fused[0] - hidden[0], (fused[0] - hidden[0])[:1].expand(S, D), atol=1e-5, rtol=0)


def test_concat_equals_one_linear_on_concatenation():
    hidden, asv_mask, metadata, present = _inputs()
    fusion = ConcatFusion(D, E, 2)
    fused, _ = fusion(hidden, asv_mask, metadata, present)
    joined = torch.cat([hidden, metadata.flatten(1).unsqueeze(1).expand(B, S, 2 * E)], dim=-1)
    expected = fusion.projection(joined) * asv_mask.unsqueeze(-1)
    torch.testing.assert_close(fused, expected)


def test_gmu_gate_starts_near_bias_and_is_reported():
    hidden, _, metadata, present = _inputs()
    pooled = torch.nn.functional.layer_norm(hidden[:, 0], (D,))
    fusion = GMUFusion(D, E, 2, gate="learned", gate_bias_init=2.0)
    fused, diagnostics = fusion(pooled, None, metadata, present)
    gate = diagnostics["gate"]
    assert fused.shape == (B, D) and gate.shape == (B, D)
    assert 0.8 < gate.mean().item() < 0.95
    expected = gate * pooled + (1 - gate) * torch.tanh(fusion.metadata_projection(metadata.flatten(1)))
    torch.testing.assert_close(fused, expected)
    low = GMUFusion(D, E, 2, gate_bias_init=-3.0)(pooled, None, metadata, present)[1]["gate"]
    assert low.mean().item() < 0.1


def test_gmu_fixed_gates():
    hidden, _, metadata, present = _inputs()
    pooled = hidden[:, 0]
    assert set(GMU_GATES) == {"learned", "open", "closed"}
    open_gate = GMUFusion(D, E, 2, gate="open")
    fused, diagnostics = open_gate(pooled, None, metadata, present)
    torch.testing.assert_close(fused, pooled)
    assert torch.all(diagnostics["gate"] == 1) and open_gate.gate is None
    closed = GMUFusion(D, E, 2, gate="closed")
    fused, diagnostics = closed(pooled, None, metadata, present)
    torch.testing.assert_close(fused, torch.tanh(closed.metadata_projection(metadata.flatten(1))))
    assert torch.all(diagnostics["gate"] == 0)


def test_cross_attention_weights_are_per_position_and_per_column():
    torch.manual_seed(0)
    hidden, asv_mask, metadata, present = _inputs()
    fusion = CrossAttentionFusion(D, E, heads=4)
    fused, diagnostics = fusion(hidden, asv_mask, metadata, present)
    weights = diagnostics["cross_attention_weights"]
    assert fused.shape == (B, S, D) and weights.shape == (B, S, 2)
    # sample 0 knows both columns: weights sum to 1 and differ between ASV positions
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(S))
    assert (weights[0, 0] - weights[0, 1]).abs().max() > 1e-3
    # sample 1 knows only column 0; sample 2 knows none (no update, zero weights)
    torch.testing.assert_close(weights[1, :2], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert torch.all(weights[2] == 0) and torch.all(weights[~asv_mask] == 0)
    torch.testing.assert_close(fused[2, 0], fusion.norm(hidden[2, 0]))
    assert torch.all(fused[~asv_mask] == 0)


def test_cross_attention_updates_differ_between_positions():
    torch.manual_seed(0)
    hidden, asv_mask, metadata, present = _inputs()
    fusion = CrossAttentionFusion(D, E, heads=2)
    update = fusion.attention(hidden, fusion.metadata_projection(metadata), present)[0]
    assert (update[0, 0] - update[0, 1]).abs().max() > 1e-4


def test_cross_attention_finite_gradients_with_missing_columns():
    hidden, asv_mask, metadata, present = _inputs()
    hidden.requires_grad_(True)
    fusion = CrossAttentionFusion(D, E, heads=4)
    fused, diagnostics = fusion(hidden, asv_mask, metadata, present)
    (fused.sum() + diagnostics["cross_attention_weights"].sum()).backward()
    assert torch.isfinite(hidden.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters())


def test_perceiver_ignores_padded_slots():
    torch.manual_seed(0)
    hidden, asv_mask, metadata, present = _inputs(dtype=torch.float64)
    fusion = PerceiverFusion(D, E, cross_heads=4, self_heads=2, num_latents=6, num_layers=1).double().eval()
    pooled, _ = fusion(hidden, asv_mask, metadata, present)
    assert pooled.shape == (B, D)
    extra = torch.randn(B, 4, D, dtype=torch.float64)  # garbage in the padded slots must not matter
    padded_hidden = torch.cat([hidden, extra], dim=1)
    padded_mask = torch.cat([asv_mask, torch.zeros(B, 4, dtype=torch.bool)], dim=1)
    garbage = hidden.clone()
    garbage[~asv_mask] = 5.0
    torch.testing.assert_close(fusion(padded_hidden, padded_mask, metadata, present)[0], pooled,
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fusion(garbage, asv_mask, metadata, present)[0], pooled, rtol=1e-10, atol=1e-10)


def test_perceiver_masks_unknown_columns():
    torch.manual_seed(0)
    hidden, asv_mask, metadata, present = _inputs(dtype=torch.float64)
    fusion = PerceiverFusion(D, E, cross_heads=4, self_heads=2, num_latents=4, num_layers=1).double().eval()
    pooled, _ = fusion(hidden, asv_mask, metadata, present)
    assert torch.isfinite(pooled).all()
    # an unknown column's token cannot leak in, whatever it holds
    noisy = metadata.clone()
    noisy[2] = torch.randn(2, E, dtype=torch.float64)
    torch.testing.assert_close(fusion(hidden, asv_mask, noisy, present)[0][2], pooled[2])


def test_conditional_output_scaling():
    scaling = ConditionalOutputScaling((3, 4), columns=(1,), out_dim=2)
    prediction = torch.randn(4, 2)
    categoricals = torch.tensor([[1, 0], [2, 1], [0, 3], [1, 3]])
    torch.testing.assert_close(scaling(prediction, categoricals), prediction)
    with torch.no_grad():
        scaling.scales[0].weight[3] = 2.0
        scaling.biases[0].weight[3] = 1.0
    out = scaling(prediction, categoricals)
    torch.testing.assert_close(out[:2], prediction[:2])
    torch.testing.assert_close(out[2:], prediction[2:] * 2 + 1)
    quantiles = torch.randn(4, 2, 3)
    assert scaling(quantiles, categoricals).shape == (4, 2, 3)


def test_predictor_exposes_diagnostics():
    encoder = EncoderConfig(max_bp=8, embedding_dim=D, attention_heads=2, attention_layers=1, dropout=0.0)
    tokens = torch.full((2, 9), 1)
    tokens[:, 0] = START
    batch = dict(tokens=tokens, asv_index=torch.tensor([[0, 1], [1, 0]]),
                 asv_mask=torch.tensor([[True, True], [True, False]]), categoricals=torch.tensor([[1, 2], [0, 1]]))
    for fusion, key, shape in [("gmu", "gate", (2, D)), ("cross-attention", "cross_attention_weights", (2, 2, 2))]:
        model = build_model(PredictorConfig(encoder=encoder, categorical_cardinalities=(3, 3),
                                            categorical_fusion=fusion, cross_attn_heads=4))
        assert model(**batch)[key].shape == shape


# --------------------------------------------------------------------------- learning a metadata-only task

def _train_metadata_task(fusion: str | None, steps: int = 100) -> float:
    """Identical sequences everywhere; the target is +1 for category 1 and -1 for category 2 of column 0."""
    torch.manual_seed(0)
    encoder = EncoderConfig(max_bp=6, embedding_dim=D, attention_heads=2, attention_layers=1, ffn_ratio=2,
                            dropout=0.0)
    config = PredictorConfig(encoder=encoder, count_prediction=False, cross_attn_heads=4, perceiver_num_latents=4,
                             perceiver_num_layers=1, categorical_embed_dim=E,
                             categorical_cardinalities=(3, 3) if fusion else (),
                             categorical_fusion=fusion or "concat")
    model = build_model(config).train()
    tokens = torch.tensor([[START, 1, 2, 3, 4, 1, 2], [START, 4, 4, 3, PAD, PAD, PAD]])
    samples = 16
    asv_index = torch.tensor([[0, 1]]).repeat(samples, 1)
    asv_mask = torch.ones(samples, 2, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    signal = torch.arange(samples) % 2 + 1
    noise = torch.randint(1, 3, (samples,), generator=g)
    categoricals = torch.stack([signal, noise], dim=1)
    target = torch.where(signal == 1, 1.0, -1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        prediction = model(tokens, asv_index, asv_mask, categoricals=categoricals)["prediction"][:, 0]
        loss = torch.nn.functional.mse_loss(prediction, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        prediction = model(tokens, asv_index, asv_mask, categoricals=categoricals)["prediction"][:, 0]
    return torch.nn.functional.mse_loss(prediction, target).item()


def test_without_categoricals_the_task_cannot_be_learned():
    assert _train_metadata_task(None, steps=60) > 0.9


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_each_fusion_learns_a_metadata_task(fusion):
    assert _train_metadata_task(fusion) < 0.05


class ToyFusion(CategoricalFusion):
    """A fusion registered by a test: the pooled vector plus the mean of the metadata tokens, projected."""

    stage = "pooled"

    def __init__(self, dim: int, embed_dim: int):
        super().__init__()
        self.project = torch.nn.Linear(embed_dim, dim)

    @classmethod
    def from_config(cls, config) -> ToyFusion:
        return cls(config.encoder.embedding_dim, config.categorical_embed_dim)

    def forward(self, hidden, asv_mask, metadata, present):
        weights = present.unsqueeze(-1).to(metadata.dtype)
        mean = (metadata * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return hidden + self.project(mean), {}


def test_a_registered_fusion_trains_and_predicts_from_the_cli(synthetic_dir, tmp_path):
    """Adding a fusion mode is its class and one register call: the CLI offers it, the config accepts it, the
    model builds it, and its checkpoint predicts (CONTRIBUTING.md)."""
    from click.testing import CliRunner

    from aam.cli import cli
    from aam.models.registries import FUSIONS as REGISTRY
    from aam.workflows.loading import load_predictor

    REGISTRY.register("toy", ToyFusion)
    try:
        out = tmp_path / "run"
        result = CliRunner().invoke(cli, [str(a) for a in [
            "train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
            "--metadata-column", "target", "--categorical-columns", "site", "--categorical-fusion", "toy",
            "--embedding-dim", 16, "--attention-heads", 2, "--attention-layers", 1, "--token-limit", 16,
            "--epochs", 1, "--batch-size", 8, "--device", "cpu", "--output-dir", out, "--quiet"]])
        assert result.exit_code == 0, result.output
        model, _ = load_predictor(out / "checkpoints" / "best_model.pt")
        assert isinstance(model.fusion, ToyFusion) and model.config.categorical_fusion == "toy"
        result = CliRunner().invoke(cli, [str(a) for a in [
            "predict", "--model", out / "checkpoints" / "best_model.pt", "--table", synthetic_dir["table"],
            "--metadata", synthetic_dir["metadata"], "--output", tmp_path / "p.tsv"]])
        assert result.exit_code == 0, result.output
        help_text = CliRunner().invoke(cli, ["train", "--help"]).output
        assert "toy" in help_text
    finally:
        REGISTRY.unregister("toy")
    result = CliRunner().invoke(cli, ["train", "--categorical-fusion", "toy"])
    assert result.exit_code == 2 and "toy" in result.output  # gone once unregistered


def test_registry_names_load_lazily_and_refuse_a_taken_name():
    from aam.models.registries import FUSIONS as REGISTRY

    assert REGISTRY.names() == ("concat", "add", "gmu", "cross-attention", "perceiver")
    assert REGISTRY["gmu"] is GMUFusion
    with pytest.raises(ValueError, match="already registered"):
        REGISTRY.register("gmu", ToyFusion)


def test_the_cli_reads_options_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys, aam.cli.train, aam.cli.pretrain, aam.cli.explain; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
