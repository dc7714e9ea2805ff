"""Size groups (``--size-groups``): the collator's grouping of like-sized samples, and the sample-level stacks
run group by group giving the outputs and gradients of one pass over the padded batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aam.cli import cli
from aam.data.dataset import AmpliconData, BatchCollator, SampleDataset, size_groups
from aam.data.sequences import tokenize
from aam.models import SequenceEncoder, SequencePredictor
from aam.training.forward import forward_batch
from tests.test_models import tiny_encoder, tiny_predictor


def test_groups_order_samples_by_size_and_pad_each_group_to_its_largest():
    lengths = np.array([3, 9, 1, 9, 4, 7, 2])
    groups = size_groups(lengths, 3)
    order, restore = groups.order.numpy(), groups.restore.numpy()
    assert list(lengths[order]) == sorted(lengths, reverse=True)
    assert list(order[restore]) == list(range(7))  # restore undoes order
    assert [b[:2] for b in groups.bounds] == [(0, 2), (2, 5), (5, 7)]  # as equal in count as can be
    assert [b[2] for b in groups.bounds] == [9, 7, 2]  # each group's largest sample (9 9 | 7 4 3 | 2 1)
    assert size_groups(lengths, 1) is None and size_groups(np.array([5, 5, 5, 5]), 2) is None
    assert len(size_groups(lengths, 50).bounds) == 3  # two samples or more per group: 7 // 2 groups at most
    merged = size_groups(np.array([9, 9, 9, 9, 9, 2, 1, 1]), 4)  # 9 9 | 9 9 | 9 2 | 1 1: padded to 9, 9, 9, 1
    assert merged.bounds == ((0, 6, 9), (6, 8, 1))  # groups as wide as the one before join it


def _data(seed: int = 0, n_samples: int = 11, n_asvs: int = 30) -> AmpliconData:
    """Samples of 1 to 25 ASVs of 8-12 nucleotides."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_samples, n_asvs))
    for row in range(n_samples):
        counts[row, rng.choice(n_asvs, rng.integers(1, 26), replace=False)] = rng.integers(1, 50)
    tokens = tokenize(["".join(rng.choice(list("ACGT"), rng.integers(8, 13))) for _ in range(n_asvs)], 12).tokens
    return AmpliconData(counts, tokens, [f"s{i}" for i in range(n_samples)], [f"a{j}" for j in range(n_asvs)])


def _batches(data: AmpliconData, n_groups: int):
    dataset = SampleDataset(data, None, token_limit=64)
    items = [dataset[i] for i in range(len(dataset))]
    whole = BatchCollator(data.tokens, data.sample_ids)(items)
    grouped = BatchCollator(data.tokens, data.sample_ids, n_size_groups=n_groups)(items)
    return whole, grouped


@pytest.mark.parametrize("family", ["encoder", "predictor"])
def test_grouped_stacks_give_the_outputs_and_gradients_of_one_pass(family):
    torch.manual_seed(0)
    encoder = tiny_encoder(count_embedding=True)
    model = (SequenceEncoder(encoder) if family == "encoder" else SequencePredictor(tiny_predictor(encoder)))
    model = model.double()
    whole, grouped = _batches(_data(), n_groups=4)
    assert whole.size_groups is None and len(grouped.size_groups.bounds) == 4
    assert grouped.size_groups.bounds[-1][2] < whole.asv_mask.shape[1]  # the smallest group is cut short
    grouped = grouped.to("cpu")  # moving a batch moves its groups' index tensors
    outputs = []
    for batch in (whole, grouped):
        model.zero_grad()
        batch.counts = batch.counts.double()
        out = forward_batch(model, batch)
        key = "distances" if family == "encoder" else "prediction"
        (out[key].square().sum() + out["sample_embeddings"].sum()).backward()
        outputs.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (one, one_grads), (groups, group_grads) = outputs
    for key in ("embeddings", "sample_embeddings", "distances") + (("prediction",) if family == "predictor" else ()):
        torch.testing.assert_close(groups[key], one[key], rtol=1e-9, atol=1e-11)
    assert one_grads.keys() == group_grads.keys()
    for name in one_grads:
        torch.testing.assert_close(group_grads[name], one_grads[name], rtol=1e-8, atol=1e-10, msg=name)


def test_cli_pretrain_with_size_groups_follows_the_same_losses(synthetic_dir, tmp_path):
    histories = []
    for groups in ("1", "3"):
        out = tmp_path / f"groups{groups}"
        result = CliRunner().invoke(cli, [
            "pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"], "--output-dir", str(out),
            "--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "16",
            "--batch-size", "8", "--epochs", "3", "--dropout", "0", "--seed", "1", "--device", "cpu", "--quiet",
            "--size-groups", groups])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "config.json").read_text())["options"]["size_groups"] == int(groups)
        state = torch.load(out / "checkpoints" / "last_model.pt", map_location="cpu", weights_only=False)
        histories.append([[row["train_loss"], row["val_loss"]] for row in state["training_state"]["history"]])
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-4)


def test_compiled_training_with_size_groups_has_no_breaks_and_a_graph_per_group_count():
    """Group sizes are symbolic under ``torch.compile(dynamic=True)``: three epochs of 4-sample batches in up to
    two groups compile the ungrouped graphs (a batch whose groups merge runs as one) plus one for two groups,
    with no graph break, and train as the ungrouped model does."""
    from torch._dynamo.utils import counters

    from aam.data.dataset import EpochShuffleSampler, make_loader
    from tests.test_trainer import _data as trainer_data
    from tests.test_trainer import _loader, _trainer

    def fit(n_groups: int, compile_model: bool):
        torch._dynamo.reset()
        counters.clear()
        torch.manual_seed(0)
        trainer = _trainer(epochs=3, nucleotides=True, compile_model=compile_model, compile_backend="eager")
        data, targets = trainer_data(14, n_asvs=40, floor=3)
        dataset = SampleDataset(data, targets=targets, token_limit=32, asv_sampling="random", seed=0)
        collator = BatchCollator(data.tokens, data.sample_ids, n_size_groups=n_groups)
        loader = make_loader(dataset, collator, 4, shuffle=True, sampler=EpochShuffleSampler(14, 0), drop_last=True)
        grouped = sum(b.size_groups is not None for epoch in range(3) for b in (loader.sampler.set_epoch(epoch),
                                                                                 list(loader))[1])
        torch.manual_seed(1)
        history = trainer.fit(loader, _loader(4, n=7)).history
        return history, int(counters["stats"]["unique_graphs"]), dict(counters["graph_break"]), grouped

    compiled, graphs, breaks, grouped = fit(2, compile_model=True)
    assert not breaks and grouped >= 3
    assert graphs <= 4  # training (one, or two with duck sizing), evaluation, two groups
    plain, *_ = fit(1, compile_model=False)
    for epoch, reference in zip(compiled, plain):
        assert epoch["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-4)


def test_groups_cut_the_sample_level_work_on_padding():
    from torch.utils.flop_counter import FlopCounterMode

    model = SequenceEncoder(tiny_encoder(attention_layers=2)).eval()
    whole, grouped = _batches(_data(seed=3, n_samples=16), n_groups=4)
    used = whole.asv_mask.float().mean().item()
    padded = sum((stop - start) * slots for start, stop, slots in grouped.size_groups.bounds) / whole.asv_mask.numel()
    assert padded < 0.85 and used <= padded  # slots computed, as a share of the batch's padded slots
    flops = []
    for batch in (whole, grouped):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            forward_batch(model, batch)
        flops.append(counter.get_total_flops())
    assert flops[1] < flops[0]  # the sample-level stacks skip the slots each group does not need


def test_size_groups_benchmark_counts_less_work_with_more_groups(load_benchmark, synthetic_dir, tmp_path):
    bench = load_benchmark("size_groups")
    result = bench.main(["--table", str(synthetic_dir["table"]), "--batch-size", "12", "--groups", "1", "3",
                         "--batches", "5", "--token-limit", "64", "--max-bp", "40", "--dim", "16", "--time",
                         "--device", "cpu", "--repeats", "1", "--results", str(tmp_path / "r.json")])
    one, three = result["groups"][1], result["groups"][3]
    assert 0 < one["slot_use"] < three["slot_use"] <= 1 and one["forward_gflop"] > three["forward_gflop"] > 0
    assert one["step_s"] > 0 and three["step_s"] > 0
    assert json.loads((tmp_path / "r.json").read_text())["batch_size"] == 12
