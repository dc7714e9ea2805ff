"""DDP and FSDP on CPU with gloo and 2 processes: global UniFrac pairs, identical splits, checkpoints (full and
sharded), resume, predict; the DataParallel batch split; --data-parallel without CUDA."""

from __future__ import annotations

import faulthandler
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from aam.data.dataset import AmpliconData, BatchCollator, MatrixDistanceLookup, SampleDataset
from aam.models import EncoderConfig, SequenceEncoder
from aam.objectives.losses import MultiTaskLoss
from aam.outputs.checkpoint import load_checkpoint, save_checkpoint
from aam.training import sharding
from aam.training.distributed import (
    DistributedContext,
    all_gather_objects,
    broadcast_object,
    gather_with_grad,
    shutdown,
)
from aam.training.host_syncs import counting_host_syncs
from aam.training.trainer import Trainer, TrainerConfig, forward_batch

TINY = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "16",
        "--batch-size", "8", "--epochs", "1", "--seed", "5", "--device", "cpu", "--quiet"]  # later flags win


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RANK_DEADLINE_S = 240  # a rank still running after this prints every thread's stack and exits: a failure, not a hang


def join_group(rank: int, world: int, port: int) -> None:
    """Start a spawned rank: one thread, a gloo group on loopback with a short timeout, a deadline."""
    faulthandler.dump_traceback_later(RANK_DEADLINE_S, exit=True)
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))


def spawn_ranks(worker, tmp_path: Path) -> None:
    """Run ``worker(rank, 2, port, out_dir)`` in two spawned processes; raises if either fails."""
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)


def tiny_problem(n_samples: int = 9):
    """A random table, its tokens and a symmetric distance matrix (same on every rank: fixed seed)."""
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(n_samples, 12)).astype(np.float32)
    counts[:, 0] += 1  # every sample has an ASV
    tokens = np.zeros((12, 21), dtype=np.uint8)
    tokens[:, 0] = 6
    tokens[:, 1:] = rng.integers(1, 5, size=(12, 20))
    data = AmpliconData(counts, tokens, [f"s{i}" for i in range(n_samples)], [f"a{j}" for j in range(12)])
    matrix = rng.uniform(0.2, 0.9, size=(n_samples, n_samples))
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 0)
    return data, MatrixDistanceLookup(matrix)


def model_and_trainer(context: DistributedContext | None, lookup):
    torch.manual_seed(0)
    model = SequenceEncoder(EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2, attention_layers=1,
                                          dropout=0.0, token_limit=16))
    loss = MultiTaskLoss(target_penalty=0.0, penalty=1.0, nuc_penalty=0.0, count_penalty=0.0)
    config = TrainerConfig(optimizer="sgd", lr=0.1, mask_nucleotides=False, progress=False)  # a step of lr * grad
    trainer = Trainer(model, loss, config, device=torch.device("cpu"), distributed=context, distance_lookup=lookup)
    return model, trainer


def batch_of(data, rows, lookup):
    dataset = SampleDataset(data, rows, token_limit=16)
    return BatchCollator(data.tokens, data.sample_ids, lookup)([dataset[i] for i in range(len(dataset))])


GLOBAL_BATCH = np.arange(8)  # rank r trains on GLOBAL_BATCH[r::2]
EVAL_SHARDS = ([[0, 2, 4, 6], [8]], [[1, 3, 5, 7]])  # unequal numbers of validation batches per rank


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    join_group(rank, world, port)
    try:
        data, lookup = tiny_problem()
        model, trainer = model_and_trainer(DistributedContext(rank, world, rank), lookup)
        rows = GLOBAL_BATCH[rank::world]  # this rank's share of the global batch
        batch = batch_of(data, rows, lookup)
        trainer.ready(batch)
        outputs = forward_batch(trainer.forward_model, batch)
        losses = trainer._training_losses(outputs, batch)
        losses["total"].backward()
        gathered = gather_with_grad(batch.sample_index)
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        torch.save({"unifrac": losses["unifrac"], "rows": gathered, "grads": grads}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown()  # drains gloo's threads first: a bare destroy can deadlock at exit


def test_global_pairwise_loss_and_gradients_match_single_process(tmp_path):
    spawn_ranks(_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    data, lookup = tiny_problem()
    model, trainer = model_and_trainer(None, lookup)
    order = ranks[0]["rows"].numpy()  # the global batch in gathered order
    batch = batch_of(data, order, lookup)
    losses = trainer._training_losses(forward_batch(model, batch), batch)
    losses["total"].backward()

    for rank in ranks:
        torch.testing.assert_close(rank["unifrac"], losses["unifrac"], rtol=1e-5, atol=1e-6)
    for name, parameter in model.named_parameters():
        if parameter.grad is None:
            continue
        for rank in ranks:  # DDP averaged the ranks' gradients: equal to the single-process gradient
            torch.testing.assert_close(rank["grads"][name], parameter.grad, rtol=1e-4, atol=1e-6)


def _fsdp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    join_group(rank, world, port)
    try:
        data, lookup = tiny_problem()
        model, trainer = model_and_trainer(DistributedContext(rank, world, rank, strategy="fsdp"), lookup)
        evaluation = trainer.evaluate([batch_of(data, rows, lookup) for rows in EVAL_SHARDS[rank]])
        batch = batch_of(data, GLOBAL_BATCH[rank::world], lookup)
        trainer.ready(batch)
        losses = trainer._training_losses(forward_batch(trainer.forward_model, batch), batch)
        losses["total"].backward()
        sharding.average_replicated_grads(model)
        grads = {k: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
                 for k, p in model.named_parameters() if p.grad is not None}
        norm = sharding.grad_norm(model.parameters())
        trainer.optimizer.step()
        model_state, optimizer_state = sharding.full_state(model, trainer.optimizer)
        fresh, fresh_trainer = model_and_trainer(DistributedContext(rank, world, rank, strategy="fsdp"), lookup)
        sharding.load_optimizer_state(fresh, fresh_trainer.optimizer, broadcast_object(optimizer_state))
        reloaded = sharding.full_state(fresh, fresh_trainer.optimizer)[1]
        torch.save({"unifrac": losses["unifrac"], "rows": gather_with_grad(batch.sample_index), "grads": grads,
                    "norm": norm, "metrics": evaluation.metrics, "model_state": model_state,
                    "optimizer_state": optimizer_state, "reloaded": reloaded}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown()  # drains gloo's threads first: a bare destroy can deadlock at exit


def test_fsdp_matches_single_process(tmp_path):
    """Evaluation of unequal shards, the global-pair loss, every gathered gradient, its norm, and the full
    state after one optimizer step equal one process on the same global batch."""
    spawn_ranks(_fsdp_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    data, lookup = tiny_problem()
    model, trainer = model_and_trainer(None, lookup)
    evaluation = trainer.evaluate([batch_of(data, rows, lookup) for shard in EVAL_SHARDS for rows in shard])
    batch = batch_of(data, ranks[0]["rows"].numpy(), lookup)
    losses = trainer._training_losses(forward_batch(model, batch), batch)
    losses["total"].backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    trainer.optimizer.step()

    for rank in ranks:
        assert rank["metrics"].keys() == evaluation.metrics.keys()
        for key, value in evaluation.metrics.items():
            assert rank["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        torch.testing.assert_close(rank["unifrac"], losses["unifrac"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rank["norm"], norm, rtol=1e-4, atol=1e-6)
        assert rank["grads"].keys() == {k for k, p in model.named_parameters() if p.grad is not None}
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                torch.testing.assert_close(rank["grads"][name], parameter.grad, rtol=1e-4, atol=1e-6)
    gathered, optimizer_state = ranks[0]["model_state"], ranks[0]["optimizer_state"]
    assert ranks[1]["model_state"] == {}  # gathered on rank 0 only
    for key, value in model.state_dict().items():
        torch.testing.assert_close(gathered[key], value, rtol=1e-4, atol=1e-6)
    expected = sharding.named_optimizer_state(model, trainer.optimizer, trainer.optimizer.state_dict())
    single, single_trainer = model_and_trainer(None, lookup)  # a named state loads into an unsharded model too
    sharding.load_optimizer_state(single, single_trainer.optimizer, optimizer_state)
    loaded = sharding.named_optimizer_state(single, single_trainer.optimizer, single_trainer.optimizer.state_dict())
    for state in (optimizer_state, ranks[0]["reloaded"], loaded):  # gathered, reloaded into FSDP and gathered again
        assert state["state"].keys() == expected["state"].keys()
        for name, moments in expected["state"].items():
            for key, value in moments.items():
                torch.testing.assert_close(state["state"][name][key], value, rtol=1e-4, atol=1e-7)


def torchrun(*args, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), "-m", "aam.cli", *map(str, args)]  # the reference tool's form
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def predict_matches_validation(synthetic_dir, run: Path, model: Path, output: Path) -> None:
    """``aam predict --model MODEL`` reproduces the run's best-epoch val_predictions.tsv, every sample once."""
    from click.testing import CliRunner

    from aam.cli import cli

    val = pd.read_csv(run / "val_predictions.tsv", sep="\t", dtype={"sample_id": str})
    expected = set((run / "val_samples.txt").read_text().split())
    assert len(val) == len(expected) and set(val["sample_id"]) == expected  # every sample once, none twice
    result = CliRunner().invoke(cli, ["predict", "--model", str(model), "--table", str(synthetic_dir["table"]),
                                      "--metadata", str(synthetic_dir["metadata"]), "--output", str(output),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv(output, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    np.testing.assert_allclose(predicted.loc[val["sample_id"], "prediction"], val["prediction"], rtol=1e-4, atol=1e-4)


def train_args(synthetic_dir, output_dir: Path, *extra) -> list:
    return ["train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
            "--metadata-column", "target", "--categorical-columns", "site", "--count-embedding",
            "--output-dir", output_dir, *TINY, *extra]


@pytest.mark.parametrize("strategy", ["--distributed", "--fsdp"])
def test_torchrun_pretrain_and_train_then_predict(synthetic_dir, tmp_path, strategy):
    pretrain = torchrun("pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"],
                        "--output-dir", tmp_path / "pre", strategy, *TINY, "--on-disk", tmp_path / "arrays",
                        cwd=tmp_path)
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    log = (tmp_path / "pre" / "training.log").read_text()
    assert "split is identical on all 2 ranks" in log
    assert (tmp_path / "arrays" / "union.json").is_file()  # the first rank built it, the other reused it
    assert sorted(p.name for p in (tmp_path / "pre" / "checkpoints").iterdir()) == ["best_model.pt", "last_model.pt"]

    ema = ["--ema-decay", "0.9"] if strategy == "--distributed" else []  # checkpoints then hold the average
    train = torchrun(*train_args(synthetic_dir, tmp_path / "train", strategy, "--pretrained-encoder",
                                 tmp_path / "pre" / "pretrained_encoder.pt", *ema), cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    run = tmp_path / "train"
    predict_matches_validation(synthetic_dir, run, run / "checkpoints" / "best_model.pt", tmp_path / "p.tsv")


def test_torchrun_fsdp_sharded_checkpoint_predict_and_resume(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    first = torchrun(*train_args(synthetic_dir, run, "--fsdp", "--fsdp-sharded-checkpoint"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best_model", "last_model"]  # no staging left
    best = checkpoints / "best_model"
    assert {p.name for p in best.iterdir()} == {".metadata", "__0_0.distcp", "__1_0.distcp", "aam_checkpoint.pt"}
    assert load_checkpoint(best)["sharded"] == {"world_size": 2}
    predict_matches_validation(synthetic_dir, run, best, tmp_path / "sharded.tsv")

    # the directory read in one process is an ordinary checkpoint: predict from it, resume FSDP from it
    last = load_checkpoint(checkpoints / "last_model")
    optimizer_state = last["training_state"]["optimizer"]
    assert set(optimizer_state["state"]) <= set(last["model_state"])  # keyed by parameter name, full tensors
    save_checkpoint(tmp_path / "last.pt", kind=last["kind"], model_config=last["model_config"],
                    model_state=last["model_state"], data=last["data"], training_state=last["training_state"])
    resumed = torchrun(*train_args(synthetic_dir, tmp_path / "resumed", "--fsdp", "--epochs", "2",
                                   "--resume-from", tmp_path / "last.pt"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in (tmp_path / "resumed" / "training.log").read_text()
    state = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last_model.pt")["training_state"]
    assert state["epoch"] == 1 and len(state["history"]) == 2


def test_data_parallel_split_reproduces_the_full_batch(monkeypatch):
    """Running the model on each replica's share and concatenating equals one forward on the whole batch."""
    from aam.models import PredictorConfig, SequencePredictor
    from aam.models.asv_encoder import ASVEncoder, nucleotide_positions
    from aam.models.build import unwrap_model
    from aam.training.data_parallel import split_inputs

    def every_third_position(self, tokens, generator=None):  # masking that does not depend on the batch
        return nucleotide_positions(tokens) & (torch.arange(tokens.shape[1]) % 3 == 1)

    monkeypatch.setattr(ASVEncoder, "mask_tokens", every_third_position)
    torch.manual_seed(0)
    encoder = EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2, attention_layers=1, token_limit=16,
                            count_embedding=True)
    model = SequencePredictor(PredictorConfig(encoder=encoder, categorical_cardinalities=(3,))).eval()
    data, lookup = tiny_problem()
    counts = data.counts.toarray()  # samples 0-2 use ASVs 0-5, samples 3-4 ASVs 4-11: the shares overlap on 4 and 5
    counts[:3, 6:] = 0
    counts[3:, :4] = 0
    counts[3:, 4] += 1
    data = AmpliconData(counts, data.tokens, data.sample_ids, data.asv_ids)
    batch = batch_of(data, np.arange(5), lookup)
    inputs = {"tokens": batch.tokens, "asv_index": batch.asv_index, "asv_mask": batch.asv_mask,
              "counts": batch.counts, "categoricals": torch.tensor([[1], [2], [0], [1], [2]]),
              "mask_nucleotides": True}
    shares = split_inputs(inputs, 2)
    assert [s.samples for s in shares] == [slice(0, 3), slice(3, 5)]
    with torch.no_grad():
        full = model(**inputs)
        parts = [model(**share.inputs) for share in shares]
        rows = torch.cat([share.asv_rows for share in shares])
        for share in shares:  # fewer distinct ASVs, same slots and sequence length
            assert share.inputs["tokens"].shape[1:] == batch.tokens.shape[1:]
            assert share.inputs["asv_index"].shape[1] == batch.asv_index.shape[1]
            assert len(share.asv_rows) < len(batch.tokens)
        for key in ("embeddings", "prediction", "sample_embeddings", "count_prediction", "asv_mask"):
            torch.testing.assert_close(torch.cat([p[key] for p in parts]), full[key], msg=key)
        for key in ("nucleotide_logits", "nucleotide_mask", "nucleotide_targets"):
            torch.testing.assert_close(torch.cat([p[key] for p in parts]), full[key][rows], msg=key)
        embeddings = torch.cat([p["embeddings"] for p in parts])
        torch.testing.assert_close(unwrap_model(model).distance_head(embeddings), full["distances"])

        cached = model.encode_asvs(batch.tokens)  # the frozen-encoder path splits the cached embeddings alike
        without_tokens = {**inputs, "asv_embeddings": cached, "mask_nucleotides": False}
        expected = model(**without_tokens)["prediction"]
        split = torch.cat([model(**s.inputs)["prediction"] for s in split_inputs(without_tokens, 2)])
        torch.testing.assert_close(split, expected)


def test_parallel_flags_that_cannot_start_here(synthetic_dir, tmp_path):
    from click.testing import CliRunner

    from aam.cli import cli

    for flag, message in (("--data-parallel", "needs CUDA GPUs"), ("--fsdp", "needs a torchrun launch")):
        args = train_args(synthetic_dir, tmp_path / "out", flag)
        if flag == "--data-parallel" and torch.cuda.is_available():
            continue
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 2, result.output
        assert flag in result.output and message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- DDP step: accumulation, syncs
def _fixed_norms(model) -> None:
    """ASVNorm's running statistics follow each rank's own batches; fixed, DDP can equal one process."""
    from aam.models.asv_encoder import ASVNorm

    for module in model.modules():
        if isinstance(module, ASVNorm):
            module.momentum = 0.0
            module.num_batches_tracked.fill_(1)


def _accumulating_trainer(context, lookup):
    torch.manual_seed(0)
    model = SequenceEncoder(EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2, attention_layers=1,
                                          dropout=0.0, token_limit=16))
    _fixed_norms(model)
    loss = MultiTaskLoss(target_penalty=0.0, penalty=1.0, nuc_penalty=0.0, count_penalty=0.0)
    config = TrainerConfig(optimizer="sgd", lr=0.1, mask_nucleotides=False, progress=False, scheduler="cosine",
                           gradient_accumulation_steps=2, progress_interval=1e9, epochs=1)
    return model, Trainer(model, loss, config, device=torch.device("cpu"), distributed=context,
                          distance_lookup=lookup)


def _ddp_step_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from aam.data.dataset import make_loader
    from aam.training.distributed import ResumableDistributedSampler

    join_group(rank, world, port)
    try:
        data, lookup = tiny_problem(16)
        collator = BatchCollator(data.tokens, data.sample_ids, lookup)
        syncs = {}
        for n_samples in (4, 12):  # 1 and 3 batches of 2 per rank: the count must not grow with the steps
            model, trainer = _accumulating_trainer(DistributedContext(rank, world, rank), lookup)
            dataset = SampleDataset(data, np.arange(n_samples), token_limit=16)
            sampler = ResumableDistributedSampler(dataset, world, rank, shuffle=True, seed=3)
            loader = make_loader(dataset, collator, 2, shuffle=True, sampler=sampler)
            trainer.scheduler = trainer_scheduler(trainer, len(loader))
            with counting_host_syncs() as counts:
                trainer.train_epoch(loader, 0)
            syncs[n_samples] = counts
            order = [list(sampler)]
        unused = {"masking off": trainer.strategy.ddp.find_unused_parameters}
        torch.manual_seed(0)
        model_all = SequenceEncoder(EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2, attention_layers=1,
                                                  dropout=0.0, token_limit=16))
        every = Trainer(model_all, MultiTaskLoss(target_penalty=0.0, penalty=1.0, nuc_penalty=1.0, count_penalty=0.0),
                        TrainerConfig(progress=False, epochs=1, scheduler="cosine"), device=torch.device("cpu"),
                        distributed=DistributedContext(rank, world, rank), distance_lookup=lookup)
        every.scheduler = trainer_scheduler(every, len(loader))
        every.train_epoch(loader, 0)
        unused["every head used"] = every.strategy.ddp.find_unused_parameters
        torch.manual_seed(0)  # --compile-model under DDP: the DDP wrapper is what gets compiled
        compiled = Trainer(SequenceEncoder(EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2,
                                                         attention_layers=1, dropout=0.0, token_limit=16)),
                           MultiTaskLoss(target_penalty=0.0, penalty=1.0, nuc_penalty=0.0, count_penalty=0.0),
                           TrainerConfig(progress=False, epochs=1, scheduler="cosine", mask_nucleotides=False,
                                         compile_model=True, compile_backend="eager"),
                           device=torch.device("cpu"), distributed=DistributedContext(rank, world, rank),
                           distance_lookup=lookup)
        compiled.scheduler = trainer_scheduler(compiled, len(loader))
        compiled.train_epoch(loader, 0)
        unused["compiled wraps DDP"] = isinstance(getattr(compiled.forward_model, "_orig_mod", None),
                                                  nn.parallel.DistributedDataParallel)
        torch.save({"syncs": syncs, "order": all_gather_objects(order[0]), "unused": unused,
                    "weights": {k: v.detach().clone() for k, v in model.named_parameters()}},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown()  # drains gloo's threads first: a bare destroy can deadlock at exit


def trainer_scheduler(trainer, n_batches: int):
    from aam.training.schedulers import build_scheduler

    steps = -(-n_batches // trainer.config.gradient_accumulation_steps)
    return build_scheduler("cosine", trainer.optimizer, total_steps=steps, steps_per_epoch=steps)


def test_ddp_step_with_accumulation_equals_one_process_without_per_step_host_syncs(tmp_path):
    """Two ranks, batches of 2, accumulation 2: each optimizer step sees 2 global batches of 4 samples (all
    their UniFrac pairs); one process fed the same global batches lands on the same weights. Host syncs in
    the epoch (the loss sums reduced at its end) do not grow with the number of steps."""
    spawn_ranks(_ddp_step_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for rank in ranks:
        assert rank["syncs"][4] == rank["syncs"][12], rank["syncs"]
        # the nucleotide head gets no gradient with masking off; DDP searches for unused parameters only then
        assert rank["unused"] == {"masking off": True, "every head used": False, "compiled wraps DDP": True}

    _assert_one_process_lands_on(ranks)


def _assert_one_process_lands_on(ranks: list[dict]) -> None:
    """One process fed the ranks' global batches (global batch k = rank 0's batch k + rank 1's), with the same
    accumulation, ends on every rank's weights."""
    data, lookup = tiny_problem(16)
    collator = BatchCollator(data.tokens, data.sample_ids, lookup)
    dataset = SampleDataset(data, np.arange(12), token_limit=16)
    shards = ranks[0]["order"]  # each rank's sample order
    batches = [collator([dataset[i] for i in shards[0][k:k + 2] + shards[1][k:k + 2]])
               for k in range(0, len(shards[0]), 2)]
    model, trainer = _accumulating_trainer(None, lookup)
    trainer.scheduler = trainer_scheduler(trainer, len(batches))
    trainer.train_epoch(batches, 0)
    for name, parameter in model.named_parameters():
        for rank in ranks:
            torch.testing.assert_close(rank["weights"][name], parameter.detach(), rtol=1e-4, atol=1e-6)


def _fsdp_bf16_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    join_group(rank, world, port)
    try:
        data, lookup = tiny_problem()
        torch.manual_seed(0)
        model = SequenceEncoder(EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2, attention_layers=1,
                                              dropout=0.0, token_limit=16))
        loss = MultiTaskLoss(target_penalty=0.0, penalty=1.0, nuc_penalty=0.0, count_penalty=0.0)
        config = TrainerConfig(optimizer="sgd", lr=0.1, mask_nucleotides=False, progress=False,
                               mixed_precision="bf16")
        trainer = Trainer(model, loss, config, device=torch.device("cpu"),
                          distributed=DistributedContext(rank, world, rank, strategy="fsdp"), distance_lookup=lookup)
        seen = []
        from aam.models.layers import TransformerBlock

        block = next(m for m in model.modules() if isinstance(m, TransformerBlock))
        block.register_forward_pre_hook(lambda module, args: seen.append(module.ffn[0].weight.dtype))
        batch = batch_of(data, GLOBAL_BATCH[rank::world], lookup)
        with trainer._autocast():
            trainer.ready(batch)
            losses = trainer._training_losses(forward_batch(trainer.forward_model, batch), batch)
        losses["total"].backward()
        grads = {p.grad.dtype for p in model.parameters() if p.grad is not None}
        torch.save({"unifrac": losses["unifrac"].float(), "seen": seen, "grads": grads},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown()  # drains gloo's threads first: a bare destroy can deadlock at exit


def test_fsdp_bf16_gathers_weights_in_bf16_and_keeps_float32_gradients(tmp_path):
    spawn_ranks(_fsdp_bf16_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    data, lookup = tiny_problem()
    model, trainer = model_and_trainer(None, lookup)
    batch = batch_of(data, np.concatenate([GLOBAL_BATCH[0::2], GLOBAL_BATCH[1::2]]), lookup)
    reference = trainer._training_losses(forward_batch(model, batch), batch)["unifrac"]
    for rank in ranks:
        assert rank["seen"] == [torch.bfloat16] and rank["grads"] == {torch.float32}
        assert rank["unifrac"].item() == pytest.approx(reference.item(), rel=0.05)


def _fsdp_accumulation_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from aam.data.dataset import make_loader
    from aam.training.distributed import ResumableDistributedSampler

    join_group(rank, world, port)
    try:
        data, lookup = tiny_problem(16)
        dataset = SampleDataset(data, np.arange(12), token_limit=16)
        sampler = ResumableDistributedSampler(dataset, world, rank, shuffle=True, seed=3)
        loader = make_loader(dataset, BatchCollator(data.tokens, data.sample_ids, lookup), 2, shuffle=True,
                             sampler=sampler)
        model, trainer = _accumulating_trainer(DistributedContext(rank, world, rank, strategy="fsdp"), lookup)
        trainer.scheduler = trainer_scheduler(trainer, len(loader))
        trainer.train_epoch(loader, 0)
        state, _ = sharding.full_state(model, trainer.optimizer)
        torch.save({"order": all_gather_objects(list(sampler)), "weights": state}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown()  # drains gloo's threads first: a bare destroy can deadlock at exit


def test_fsdp_with_accumulation_equals_one_process(tmp_path):
    """FSDP keeps gradients unreduced inside an accumulation group and lands where one process does."""
    spawn_ranks(_fsdp_accumulation_worker, tmp_path)
    # the full state is gathered on rank 0 only
    _assert_one_process_lands_on([torch.load(tmp_path / "rank0.pt", weights_only=False)])
