"""Configs, ASV/sample/sequence encoders and the SequencePredictor: shapes, masks, de-duplication,
gradients, freezing, round trips, determinism and golden outputs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aam.data.vocabulary import MASK, PAD, START, UNK, A, C, G, T
from aam.models import (
    COUNT_EMBEDDINGS,
    FUSIONS,
    EncoderConfig,
    PredictorConfig,
    SequenceEncoder,
    SequencePredictor,
    build_model,
    count_parameters,
    from_config,
    model_config_from_dict,
    model_config_to_dict,
    model_summary,
    to_config,
)
from aam.models.asv_encoder import (
    RANDOM_MASK,
    SPAN_MASK,
    kmer_ids,
    nucleotide_positions,
    scored_positions,
    span_mask,
)
from aam.models.sample_encoder import abundance_feature

GOLDEN_DIR = Path(__file__).parent / "golden"




def tiny_encoder(**overrides) -> EncoderConfig:
    values = dict(max_bp=12, embedding_dim=16, attention_heads=2, attention_layers=1, ffn_ratio=2, dropout=0.0)
    return EncoderConfig(**{**values, **overrides})


def tiny_predictor(encoder: EncoderConfig | None = None, **overrides) -> PredictorConfig:
    values = dict(categorical_cardinalities=(3, 4), cross_attn_heads=4, perceiver_num_latents=4,
                  perceiver_num_layers=1)
    return PredictorConfig(encoder=encoder or tiny_encoder(), **{**values, **overrides})


def make_batch(num_samples: int = 3, slots: int = 4, distinct: int = 6, length: int = 13, seed: int = 0,
               cardinalities: tuple[int, ...] = (3, 4)) -> dict[str, torch.Tensor]:
    """A Batch-like dict: variable-length ASVs, samples with 1..slots ASVs (sample 0 full, last one single)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 6, (distinct, length), generator=g)
    tokens[:, 0] = START
    for row in range(distinct):
        end = int(torch.randint(length // 2, length + 1, (1,), generator=g))
        tokens[row, end:] = PAD
    sizes = [slots] + [int(torch.randint(1, slots + 1, (1,), generator=g)) for _ in range(num_samples - 2)] + [1]
    sizes = sizes[:num_samples]
    asv_index = torch.zeros(num_samples, slots, dtype=torch.long)
    asv_mask = torch.zeros(num_samples, slots, dtype=torch.bool)
    for b, size in enumerate(sizes):
        asv_index[b, :size] = torch.randperm(distinct, generator=g)[:size]
        asv_mask[b, :size] = True
    counts = torch.randint(1, 100, (num_samples, slots), generator=g).float() * asv_mask
    categoricals = torch.stack([torch.randint(0, c, (num_samples,), generator=g) for c in cardinalities], dim=1)
    return dict(tokens=tokens, asv_index=asv_index, asv_mask=asv_mask, counts=counts, categoricals=categoricals)


def to_double(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}


def assert_all_grads(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached: {missing}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"


# --------------------------------------------------------------------------- configs

def test_config_defaults_and_per_stack_layers():
    config = EncoderConfig(asv_layers=2)
    assert (config.vocab_size, config.embedding_dim, config.attention_heads, config.max_length) == (8, 128, 4, 151)
    assert (config.layers("asv"), config.layers("sample"), config.layers("encoder")) == (2, 4, 4)
    predictor = PredictorConfig(target_layers=1)
    assert (predictor.layers("target"), predictor.layers("count")) == (1, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(embedding_dim=128, attention_heads=3), "attention_heads"),
    (dict(nuc_mask_strategy="blocks"), "nuc_mask_strategy"),
    (dict(count_embedding_method="mul"), "count_embedding_method"),
    (dict(distance_metric="bray"), "distance_metric"),
    (dict(dropout=1.0), "dropout"),
    (dict(attention_layers=-1), "attention_layers"),
    (dict(kmer_size=9), "kmer_size"),
    (dict(kmer_size=-1), "kmer_size"),
])
def test_encoder_config_rejects_invalid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(categorical_fusion="film"), "categorical_fusion"),
    (dict(categorical_cardinalities=(3,), categorical_fusion="cross-attention", cross_attn_heads=5),
     "cross_attn_heads"),
    (dict(quantiles=(0.9, 0.1)), "sorted"),
    (dict(quantiles=(0.5, 1.5)), r"\(0, 1\)"),
    (dict(classifier=True, out_dim=1), "out_dim"),
    (dict(classifier=True, out_dim=3, output_constraint="bounded"), "classifier"),
    (dict(categorical_cardinalities=(3,), conditional_output_scaling_columns=(1,)), "conditional"),
    (dict(output_constraint="relu"), "output_constraint"),
    (dict(gmu_gate="half"), "gmu_gate"),
    (dict(categorical_cardinalities=(1,)), "cardinalities"),
])
def test_predictor_config_rejects_invalid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PredictorConfig(**kwargs)


def test_cross_attn_heads_only_validated_when_used():
    PredictorConfig(encoder=EncoderConfig(embedding_dim=12, attention_heads=3), cross_attn_heads=8)


def test_config_dict_round_trip_through_json():
    config = tiny_predictor(quantiles=(0.1, 0.5), regressor_hidden_dims=(8, 4),
                            conditional_output_scaling_columns=(1,))
    data = json.loads(json.dumps(model_config_to_dict(config)))
    assert model_config_from_dict(data) == config
    assert PredictorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert EncoderConfig.from_dict(config.encoder.to_dict()) == config.encoder
    with pytest.raises(ValueError, match="unknown"):
        EncoderConfig.from_dict({"embedding_dim": 16, "colour": "red"})
    assert data["kind"] == "predictor"
    assert model_config_from_dict({"model_type": "predictor", "config": data["config"]}) == config  # older files
    with pytest.raises(ValueError, match="kind must be one of encoder, predictor; got 'forest'"):
        model_config_from_dict({"kind": "forest", "config": {}})


# --------------------------------------------------------------------------- ASV encoder

def test_masking_only_touches_nucleotide_positions():
    torch.manual_seed(0)
    encoder = SequenceEncoder(tiny_encoder(nuc_mask_ratio=0.5)).asv_encoder
    tokens = make_batch(distinct=20)["tokens"]
    mask = encoder.mask_tokens(tokens, torch.Generator().manual_seed(2))
    assert mask.any() and not (mask & ((tokens == PAD) | (tokens == START))).any()
    out = encoder(tokens, nucleotide_mask=mask)
    width = math.ceil(0.5 * tokens.shape[1])  # the random strategy's fixed count bounds the scored width
    assert out["nucleotide_logits"].shape == (len(tokens), width, 8)
    assert torch.equal(out["nucleotide_mask"].sum(1), mask.sum(1))  # every masked position is scored, once
    assert set(encoder(tokens).keys()) == {"embeddings"}


def test_masked_logits_are_the_full_head_at_the_masked_positions_only():
    """The head runs at each row's masked positions only ([U, M, V], M = ceil(ratio x L)); logits, targets and
    the loss equal those of the head over every position, read where masked. Also with ASV chunking."""
    from aam.objectives.losses import masked_nucleotide_loss

    encoder = SequenceEncoder(tiny_encoder(nuc_mask_ratio=0.3)).asv_encoder.double().eval()
    tokens = make_batch(distinct=9)["tokens"]
    mask = encoder.mask_tokens(tokens, torch.Generator().manual_seed(1))
    out = encoder(tokens, nucleotide_mask=mask)
    hidden, _ = encoder._encode(tokens.masked_fill(mask, MASK))
    full = encoder.nucleotide_head(hidden)  # [U, L, V]
    scored = out["nucleotide_mask"]
    torch.testing.assert_close(out["nucleotide_logits"][scored], full[mask])  # row by row, positions in order
    assert torch.equal(out["nucleotide_targets"][scored], tokens[mask])
    torch.testing.assert_close(masked_nucleotide_loss(out["nucleotide_logits"], out["nucleotide_targets"], scored),
                               torch.nn.functional.cross_entropy(full[mask], tokens[mask].long()))
    encoder.chunk_size = 4
    chunked = encoder(tokens, nucleotide_mask=mask)
    torch.testing.assert_close(chunked["nucleotide_logits"], out["nucleotide_logits"])


def test_random_masks_hold_a_fixed_count_per_row_and_spans_are_scored_in_full():
    eligible = torch.rand(300, 40, generator=torch.Generator().manual_seed(0)) < 0.8
    mask = RANDOM_MASK(eligible, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(mask.sum(1), torch.round(eligible.sum(1) * 0.15).long()) and not (mask & ~eligible).any()
    assert mask.sum(1).max() <= RANDOM_MASK.width(0.15, 40) == 6
    assert SPAN_MASK.width(0.15, 40) == 40  # spans vary in number: no bound below the length
    positions, scored = scored_positions(mask, 6)
    assert torch.equal(scored.sum(1), mask.sum(1)) and mask.gather(1, positions)[scored].all()
    assert (positions[:, 1:] > positions[:, :-1])[scored[:, 1:]].all()  # masked positions in order
    again = RANDOM_MASK(eligible, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(again, mask)  # the generator alone decides


def test_a_strategy_registered_as_a_plain_function_is_scored_at_every_masked_position():
    from aam.models.registries import MASK_STRATEGIES

    MASK_STRATEGIES.register("every-third", lambda eligible, ratio, generator=None: eligible & (
        torch.arange(eligible.shape[1]) % 3 == 0))
    try:
        encoder = SequenceEncoder(tiny_encoder(nuc_mask_strategy="every-third")).asv_encoder
        tokens = make_batch(distinct=5)["tokens"]
        out = encoder(tokens, mask_nucleotides=True)
        assert out["nucleotide_logits"].shape[1] == tokens.shape[1]  # no bound known: the full width
        assert out["nucleotide_mask"].sum() == nucleotide_positions(tokens)[:, ::3].sum()
    finally:
        MASK_STRATEGIES.unregister("every-third")


def test_masked_tokens_become_mask_token():
    encoder = SequenceEncoder(tiny_encoder(nuc_mask_ratio=0.5)).asv_encoder.eval()
    tokens = make_batch(distinct=8)["tokens"]
    torch.manual_seed(3)
    masked = encoder(tokens, mask_nucleotides=True)
    torch.manual_seed(3)
    manual = encoder.mask_tokens(tokens)
    positions, scored = scored_positions(manual, masked["nucleotide_mask"].shape[1])
    torch.testing.assert_close(masked["nucleotide_mask"], scored)
    expected, _ = encoder._encode(tokens.masked_fill(manual, MASK))
    torch.testing.assert_close(masked["nucleotide_logits"][scored], encoder.nucleotide_head(expected)[manual])


@pytest.mark.parametrize("strategy", ["random", "span"])
def test_mask_ratio_is_about_right(strategy):
    encoder = SequenceEncoder(tiny_encoder(max_bp=150, nuc_mask_strategy=strategy)).asv_encoder
    tokens = torch.randint(1, 5, (400, 151), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = START
    mask = encoder.mask_tokens(tokens, torch.Generator().manual_seed(1))
    assert 0.11 < mask.float().mean().item() < 0.19


def test_span_mask_makes_runs_of_three_to_five():
    eligible = torch.ones(300, 60, dtype=torch.bool)
    mask = span_mask(eligible, 0.1, torch.Generator().manual_seed(0))
    runs = []
    for row in mask.tolist():
        length = 0
        for position, masked in enumerate(row + [False]):
            if masked:
                length += 1
            elif length:
                if position < len(row):  # runs cut by the sequence end may be shorter
                    runs.append(length)
                length = 0
    assert min(runs) >= 3 and (torch.tensor(runs) <= 5).float().mean() > 0.8


def test_nucleotide_positions_exclude_special_tokens():
    tokens = torch.tensor([[6, 1, 2, 3, 4, 5, 7, 0]])
    assert nucleotide_positions(tokens).tolist() == [[False, True, True, True, True, True, False, False]]


def test_asv_chunking_does_not_change_results():
    torch.manual_seed(0)
    model = SequenceEncoder(tiny_encoder()).double().eval()
    tokens = make_batch(distinct=7)["tokens"]
    whole = model.asv_encoder(tokens)["embeddings"]
    model.asv_encoder.chunk_size = 3
    torch.testing.assert_close(model.asv_encoder(tokens)["embeddings"], whole)


def test_compact_uint8_tokens_give_exactly_the_int64_outputs():
    """The collator hands the model uint8 tokens (an eighth of the bytes to copy to the device); embeddings,
    k-mers, masked-nucleotide logits and the nucleotide loss equal those of int64 tokens."""
    from aam.objectives.losses import masked_nucleotide_loss

    torch.manual_seed(0)
    model = SequenceEncoder(tiny_encoder(kmer_size=3)).double().eval()
    tokens = make_batch(distinct=7)["tokens"]
    mask = model.asv_encoder.mask_tokens(tokens, torch.Generator().manual_seed(1))
    wide = model.asv_encoder(tokens, nucleotide_mask=mask)
    compact = model.asv_encoder(tokens.to(torch.uint8), nucleotide_mask=mask)
    for key in ("embeddings", "nucleotide_logits"):
        torch.testing.assert_close(compact[key], wide[key], rtol=0, atol=0)
    assert compact["nucleotide_targets"].dtype == torch.uint8
    losses = [masked_nucleotide_loss(out["nucleotide_logits"], out["nucleotide_targets"], out["nucleotide_mask"])
              for out in (wide, compact)]
    assert torch.equal(*losses)
    assert torch.equal(kmer_ids(tokens.to(torch.uint8), 3), kmer_ids(tokens, 3))  # no wrap below A


def _saved_activation_bytes(encoder, tokens) -> int:
    """Bytes autograd keeps for backward after a training forward (masked-nucleotide pass included)."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = encoder(tokens, nucleotide_mask=encoder.mask_tokens(tokens))
    return sum(saved), outputs


def test_asv_chunks_are_recomputed_in_training_same_gradients_flat_memory():
    """With --asv-chunk-size, what backward keeps grows with distinct ASVs by their inputs and pooled outputs
    only; without it, by every layer's activations. Gradients are the same."""
    config = EncoderConfig(max_bp=40, embedding_dim=32, attention_heads=2, attention_layers=2, dropout=0.0)
    torch.manual_seed(0)
    encoder = SequenceEncoder(config).asv_encoder.train()
    rng = torch.Generator().manual_seed(1)
    grown = {}
    for chunk in (None, 16):
        encoder.chunk_size = chunk
        for distinct in (32, 128):
            tokens = torch.randint(A, A + 4, (distinct, 41), generator=rng)
            tokens[:, 0] = START
            grown[chunk, distinct], _ = _saved_activation_bytes(encoder, tokens)
    slope_plain = grown[None, 128] - grown[None, 32]
    slope_chunked = grown[16, 128] - grown[16, 32]
    assert slope_chunked < 0.1 * slope_plain, grown

    tokens = torch.randint(A, A + 4, (40, 41), generator=rng)
    tokens[:, 0] = START
    mask = encoder.mask_tokens(tokens, torch.Generator().manual_seed(2))
    encoder.norm.momentum = 0.0  # running statistics held fixed: both passes normalise alike
    grads = []
    for chunk in (None, 16):
        encoder.chunk_size = chunk
        encoder.zero_grad()
        outputs = encoder(tokens, nucleotide_mask=mask)
        (outputs["embeddings"].square().mean() + outputs["nucleotide_logits"].mean()).backward()
        grads.append({k: p.grad.clone() for k, p in encoder.named_parameters() if p.grad is not None})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6)


def test_unpadded_tokens_run_attention_without_a_mask_and_give_the_same_outputs(monkeypatch):
    """Equal-length ASVs (no PAD): the collator says so, the ASV transformer gets no padding mask (so CUDA can
    pick a FlashAttention kernel), and the outputs are those of the masked path."""
    import aam.models.layers as layers
    from aam.data.dataset import AmpliconData, BatchCollator, SampleDataset

    torch.manual_seed(0)
    model = SequencePredictor(tiny_predictor()).double().eval()
    batch = make_batch(distinct=5)
    batch["tokens"][batch["tokens"] == PAD] = A  # every ASV full length
    masks = []
    original = layers.F.scaled_dot_product_attention

    def recording(*args, **kwargs):
        masks.append(kwargs.get("attn_mask") is None)
        return original(*args, **kwargs)

    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", recording)
    with torch.no_grad():
        masked = model(**batch, mask_nucleotides=False)
        calls = len(masks)
        unmasked = model(**batch, tokens_padded=False)
    assert not any(masks[:calls]) and any(masks[calls:])
    for key in ("prediction", "embeddings"):
        torch.testing.assert_close(unmasked[key], masked[key])

    counts = np.ones((2, 3), dtype=np.float32)
    tokens = np.full((3, 9), A, dtype=np.uint8)
    tokens[:, 0] = START
    collate = BatchCollator(tokens, ["x", "y"])
    data = AmpliconData(counts, tokens, ["x", "y"], ["a", "b", "c"])
    dataset = SampleDataset(data, token_limit=8)
    assert not collate([dataset[0], dataset[1]]).tokens_padded
    tokens[1, 5:] = PAD
    assert collate([dataset[0], dataset[1]]).tokens_padded


def test_all_padding_token_row_is_finite():
    encoder = SequenceEncoder(tiny_encoder()).asv_encoder
    tokens = make_batch()["tokens"]
    tokens[2] = PAD
    out = encoder(tokens)["embeddings"]
    assert torch.isfinite(out).all() and torch.all(out[2] == 0)


def test_kmer_ids_read_windows_base_four_and_skip_non_nucleotides():
    tokens = torch.tensor([[START, A, C, G, T, A, PAD, PAD],
                           [START, A, UNK, T, T, T, T, PAD]])
    empty = 4**3
    expected = torch.tensor([[empty, 0 * 16 + 1 * 4 + 2, 1 * 16 + 2 * 4 + 3, 2 * 16 + 3 * 4 + 0, empty, empty],
                             [empty, empty, empty, 63, 63, empty]])
    assert torch.equal(kmer_ids(tokens, 3), expected)


def test_kmer_embedding_separates_one_substitution_and_trains():
    torch.manual_seed(0)
    model = SequenceEncoder(tiny_encoder(kmer_size=4, attention_layers=0))
    tokens = make_batch()["tokens"][:3]
    tokens[1] = tokens[0]
    tokens[1, 5] = A if tokens[0, 5] != A else C
    kmer_only = model.asv_encoder.kmer_embedding(tokens)
    assert not torch.allclose(kmer_only[0], kmer_only[1])
    embeddings = model.asv_encoder(tokens)["embeddings"]
    embeddings.square().sum().backward()
    assert model.asv_encoder.kmer_embedding.bag.weight.grad.abs().sum() > 0
    assert torch.all(model.asv_encoder.kmer_embedding.bag.weight.grad[4**4] == 0)  # the empty slot


# --------------------------------------------------------------------------- de-duplication and padding

def test_deduplicated_encoding_equals_encoding_every_slot():
    torch.manual_seed(0)
    model = SequenceEncoder(tiny_encoder()).double().eval()
    batch = make_batch(num_samples=4, slots=5, distinct=6)
    mask = batch["asv_mask"]
    with torch.no_grad():
        gathered = model.asv_encoder(batch["tokens"])["embeddings"][batch["asv_index"]][mask]
        per_slot = model.asv_encoder(batch["tokens"][batch["asv_index"][mask]])["embeddings"]
    torch.testing.assert_close(gathered, per_slot, rtol=1e-6, atol=1e-6)


def test_batched_encoder_equals_per_sample_loop():
    torch.manual_seed(0)
    model = SequenceEncoder(tiny_encoder(count_embedding=True)).double().eval()
    batch = to_double(make_batch(num_samples=4, slots=5, distinct=7))
    with torch.no_grad():
        batched = model(**batch)
        for b in range(4):
            size = int(batch["asv_mask"][b].sum())
            rows = batch["asv_index"][b, :size]
            single = model(batch["tokens"][rows], torch.arange(size).unsqueeze(0),
                           torch.ones(1, size, dtype=torch.bool), batch["counts"][b:b + 1, :size])
            torch.testing.assert_close(single["embeddings"][0], batched["embeddings"][b], rtol=1e-6, atol=1e-8)
            torch.testing.assert_close(single["sample_embeddings"][0], batched["sample_embeddings"][b, :size],
                                       rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- sequence encoder

def test_sequence_encoder_outputs():
    model = SequenceEncoder(tiny_encoder())
    batch = make_batch()
    out = model(**batch, mask_nucleotides=True)
    assert out["embeddings"].shape == (3, 16) and out["distances"].shape == (3, 3)
    assert out["sample_embeddings"].shape == (3, 4, 16)
    assert torch.equal(out["asv_mask"], batch["asv_mask"])
    assert torch.all(out["sample_embeddings"][~batch["asv_mask"]] == 0)
    assert torch.all(out["distances"].diagonal() == 0)
    assert {"nucleotide_logits", "nucleotide_mask", "nucleotide_targets"} <= out.keys()
    assert "faith_pd" not in out


def test_faith_pd_head():
    out = SequenceEncoder(tiny_encoder(distance_metric="faith_pd"))(**make_batch())
    assert out["faith_pd"].shape == (3,)


@pytest.mark.parametrize("case", ["padding_slots", "single_asv", "single_sample"])
def test_edge_batches_give_finite_outputs_and_gradients(case):
    torch.manual_seed(0)
    model = build_model(tiny_predictor(encoder=tiny_encoder(count_embedding=True, dropout=0.1),
                                       categorical_fusion="cross-attention")).train()
    batch = make_batch(num_samples=3, slots=6)
    if case == "single_asv":
        batch["asv_mask"][:, 1:] = False
        batch["asv_index"][:, 1:] = 0
        batch["counts"][:, 1:] = 0
    if case == "single_sample":
        batch = {k: v[:1] if k != "tokens" else v for k, v in batch.items()}
    out = model(**batch, mask_nucleotides=True)
    for key, value in out.items():
        assert torch.isfinite(value.float()).all(), key
    loss = out["prediction"].sum() + out["distances"].sum() + out["count_prediction"].sum() \
        + out["nucleotide_logits"].logsumexp(-1).sum()
    loss.backward()
    assert_all_grads(model)


@pytest.mark.parametrize("method", sorted(COUNT_EMBEDDINGS))
def test_count_embedding_is_depth_invariant_and_trained(method):
    torch.manual_seed(0)
    model = SequenceEncoder(tiny_encoder(count_embedding=True, count_embedding_method=method)).double().eval()
    batch = to_double(make_batch())
    deeper = dict(batch, counts=batch["counts"] * 7)
    torch.testing.assert_close(model(**batch)["embeddings"], model(**deeper)["embeddings"])
    model(**batch)["embeddings"].sum().backward()
    assert all(p.grad is not None for p in model.sample_encoder.count_embedding.parameters())
    with pytest.raises(ValueError, match="counts"):
        model(**dict(batch, counts=None))


def test_abundance_feature_range():
    counts = torch.tensor([[90.0, 9.0, 1.0, 0.0]])
    feature = abundance_feature(counts, torch.tensor([[True, True, True, False]]))
    assert feature.shape == (1, 4, 1)
    assert 0 <= feature.min() and feature.max() <= 1 and feature[0, 3, 0] == 0
    assert feature[0, 0, 0] > feature[0, 1, 0] > feature[0, 2, 0] > 0


# --------------------------------------------------------------------------- predictor

GRADIENT_CASES = ([(fusion, method) for fusion in sorted(FUSIONS) for method in (None, "film")]
                  + [(fusion, method) for fusion in ("concat", "perceiver") for method in ("add", "concat")])


@pytest.mark.parametrize("fusion, count_method", GRADIENT_CASES)
def test_gradients_reach_every_parameter(fusion, count_method):
    torch.manual_seed(0)
    encoder = tiny_encoder(count_embedding=count_method is not None, count_embedding_method=count_method or "add")
    model = build_model(tiny_predictor(encoder, categorical_fusion=fusion, conditional_output_scaling_columns=(0,),
                                       output_constraint="nonnegative-learnable"))
    out = model(**make_batch(), mask_nucleotides=True)
    loss = out["prediction"].sum() + out["distances"].sum() + out["count_prediction"].sum() \
        + out["nucleotide_logits"].logsumexp(-1).sum()
    loss.backward()
    assert_all_grads(model)


@pytest.mark.parametrize("pooling", ["abundance", "attention+abundance", "mean", "composition"])
def test_target_pooling_variants_train_every_parameter(pooling):
    torch.manual_seed(0)
    model = build_model(tiny_predictor(categorical_cardinalities=(), target_pooling=pooling))
    out = model(**make_batch(), mask_nucleotides=True)
    (out["prediction"].sum() + out["distances"].sum() + out["count_prediction"].sum()
     + out["nucleotide_logits"].logsumexp(-1).sum()).backward()
    assert_all_grads(model)
    assert (model.target_pooling is None) == (pooling in ("abundance", "mean", "composition"))


def test_abundance_pooling_is_the_read_weighted_mean_of_the_target_transformer():
    torch.manual_seed(0)
    model = build_model(tiny_predictor(categorical_cardinalities=(), target_pooling="abundance")).eval()
    batch = make_batch()
    captured = {}
    model.target_encoder.register_forward_hook(lambda module, args, output: captured.update(hidden=output))
    model(**batch)
    hidden, mask, counts = captured["hidden"], batch["asv_mask"], batch["counts"]
    for b in range(len(counts)):
        weights = counts[b][mask[b]] / counts[b][mask[b]].sum()
        expected = (weights[:, None] * hidden[b][mask[b]]).sum(0)
        torch.testing.assert_close(model._pool(hidden, mask, counts)[b], expected)
    # scaling a sample's reads leaves its prediction unchanged (relative abundance)
    scaled = dict(batch, counts=batch["counts"] * torch.tensor([[1.0], [7.0], [0.5]]))
    torch.testing.assert_close(model(**scaled)["prediction"], model(**batch)["prediction"])


def test_mean_pooling_weighs_every_present_asv_alike():
    torch.manual_seed(0)
    model = build_model(tiny_predictor(categorical_cardinalities=(), target_pooling="mean")).eval()
    batch = make_batch()
    hidden, mask = torch.randn(3, 4, 16), batch["asv_mask"]
    pooled = model._pool(hidden, mask, batch["counts"])
    for b in range(len(mask)):
        torch.testing.assert_close(pooled[b], hidden[b][mask[b]].mean(0))


def test_composition_pooling_is_the_centred_log_share_of_soft_groups():
    """Against a per-sample float64 loop: shares of softmax groups weighted by relative abundance, centred logs,
    projected; independent of read depth and of padding."""
    torch.manual_seed(0)
    model = build_model(tiny_predictor(categorical_cardinalities=(), target_pooling="composition")).eval()
    pooling = model.composition_pooling
    batch = make_batch()
    hidden, mask, counts = torch.randn(3, 4, 16), batch["asv_mask"], batch["counts"]
    pooled = model._pool(hidden, mask, counts)
    weight, bias = pooling.assign.weight.double(), pooling.assign.bias.double()
    for b in range(len(mask)):
        x, c = hidden[b][mask[b]].double(), counts[b][mask[b]].double()
        assignment = torch.softmax(x @ weight.T + bias, dim=-1)  # [n, K]
        shares = ((c / c.sum())[:, None] * assignment).sum(0)
        logs = torch.log(shares + pooling.floor)
        expected = pooling.project.weight.double() @ (logs - logs.mean()) + pooling.project.bias.double()
        torch.testing.assert_close(pooled[b].double(), expected, rtol=1e-5, atol=1e-5)
    deeper = model._pool(hidden, mask, counts * 13.0)
    torch.testing.assert_close(deeper, pooled)
    padded = model._pool(torch.cat([hidden, torch.randn(3, 2, 16)], 1), torch.cat([mask, torch.zeros(3, 2,
                         dtype=torch.bool)], 1), torch.cat([counts, torch.ones(3, 2)], 1))
    torch.testing.assert_close(padded, pooled)


def test_predictor_without_categoricals_ignores_fusion_and_accepts_none():
    model = build_model(tiny_predictor(categorical_cardinalities=()))
    assert model.fusion is None and model.categorical_embedder is None
    assert model(**make_batch())["prediction"].shape == (3, 1)
    with_columns = build_model(tiny_predictor())
    assert with_columns(**dict(make_batch(), categoricals=None))["prediction"].shape == (3, 1)


def test_freeze_base_keeps_base_in_eval_without_gradients():
    torch.manual_seed(0)
    model = build_model(tiny_predictor(encoder=tiny_encoder(dropout=0.5)))
    model.freeze_base(True)
    model.train()
    assert not model.base.training and model.target_encoder.training
    assert all(not p.requires_grad for p in model.base.parameters())
    assert to_config(model).freeze_base
    batch = make_batch()
    first, second = model(**batch), model(**batch)
    torch.testing.assert_close(first["sample_embeddings"], second["sample_embeddings"])
    first["prediction"].sum().backward()
    assert all(p.grad is None for p in model.base.parameters())
    assert model.head.linear.weight.grad is not None
    model.freeze_base(False)
    model.train()
    assert model.base.training and all(p.requires_grad for p in model.base.parameters())


def test_frozen_config_rebuilds_frozen():
    model = build_model(tiny_predictor(freeze_base=True)).train()
    assert model.base_frozen and not model.base.training


def test_precomputed_asv_embeddings_match_normal_path():
    torch.manual_seed(0)
    model = build_model(tiny_predictor()).double().eval()
    batch = to_double(make_batch())
    cached = model.encode_asvs(batch["tokens"])
    assert cached.shape == (6, 16)
    torch.testing.assert_close(model(**batch, asv_embeddings=cached)["prediction"], model(**batch)["prediction"])


def test_base_must_match_config():
    with pytest.raises(ValueError, match="EncoderConfig"):
        SequencePredictor(tiny_predictor(), base=SequenceEncoder(tiny_encoder(embedding_dim=8)))
    base = SequenceEncoder(tiny_encoder())
    assert SequencePredictor(tiny_predictor(), base=base).base is base


@pytest.mark.parametrize("fusion", ["gmu", "perceiver"])
def test_config_round_trip_rebuilds_identical_model(fusion):
    torch.manual_seed(0)
    model = build_model(tiny_predictor(categorical_fusion=fusion, quantiles=(0.25, 0.75),
                                       regressor_hidden_dims=(8,), residual_regression_head=True)).eval()
    data = json.loads(json.dumps(model_config_to_dict(to_config(model))))
    rebuilt = from_config(model_config_from_dict(data)).eval()
    rebuilt.load_state_dict(model.state_dict())
    batch = make_batch()
    torch.testing.assert_close(rebuilt(**batch)["prediction"], model(**batch)["prediction"])
    assert model_summary(rebuilt) == model_summary(model)


def test_to_config_unwraps_wrappers():
    model = build_model(tiny_encoder())
    assert to_config(torch.nn.DataParallel(model)) == model.config


def test_seeded_builds_are_deterministic():
    batch = make_batch()
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build_model(tiny_predictor(encoder=tiny_encoder(dropout=0.1))).train()
        outputs.append(model(**batch, mask_nucleotides=True))
    for key in ("prediction", "distances", "nucleotide_logits", "count_prediction"):
        torch.testing.assert_close(outputs[0][key], outputs[1][key])


def test_gradient_checkpointing_config_matches_plain():
    torch.manual_seed(0)
    plain = build_model(tiny_predictor())
    recomputed = build_model(tiny_predictor(encoder=tiny_encoder(gradient_checkpointing=True)))
    recomputed.load_state_dict(plain.state_dict())
    batch = make_batch()
    for model in (plain, recomputed):
        model.train()(**batch)["prediction"].sum().backward()
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_summary_counts_parameters():
    model = build_model(tiny_predictor())
    summary = model_summary(model)
    assert summary.splitlines()[-1].split()[-1] == f"{count_parameters(model):,}"
    model.freeze_base(True)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - count_parameters(model.base)
    assert "base" in model_summary(model) and "count_head" in summary


def test_default_model_size():
    encoder = build_model(EncoderConfig())
    predictor = build_model(PredictorConfig())
    assert 2.0e6 < count_parameters(encoder) < 2.8e6
    assert 3.5e6 < count_parameters(predictor) < 4.5e6


def _load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_golden_outputs():
    make_golden = _load_make_golden()
    stored = torch.load(make_golden.GOLDEN_PATH, weights_only=True)
    config = model_config_from_dict(stored["config"])
    assert config == make_golden.golden_config()
    model = build_model(config).double().eval()
    model.load_state_dict(stored["state_dict"])
    inputs = make_golden.golden_inputs()
    for key, value in stored["inputs"].items():
        torch.testing.assert_close(inputs[key], value)
    with torch.no_grad():
        outputs = model(**inputs)
    for key, expected in stored["outputs"].items():
        torch.testing.assert_close(outputs[key], expected, rtol=1e-6, atol=1e-12, msg=key)


def test_golden_model_is_reproducible_from_seed():
    make_golden = _load_make_golden()
    stored = torch.load(make_golden.GOLDEN_PATH, weights_only=True)
    torch.manual_seed(0)
    model = build_model(make_golden.golden_config()).double()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, stored["state_dict"][key], msg=key)


def test_dataclass_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_encoder().embedding_dim = 32  # type: ignore[misc]


def test_bfloat16_autocast_gives_finite_outputs_and_gradients():
    torch.manual_seed(0)
    model = build_model(tiny_predictor(encoder=tiny_encoder(count_embedding=True), categorical_fusion="gmu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**make_batch(), mask_nucleotides=True)
    assert torch.all(out["distances"].diagonal() == 0)
    for value in out.values():
        assert torch.isfinite(value.float()).all()
    loss = out["prediction"].float().sum() + out["distances"].sum() + out["count_prediction"].float().sum() \
        + out["nucleotide_logits"].float().logsumexp(-1).sum()
    loss.backward()
    assert_all_grads(model)
