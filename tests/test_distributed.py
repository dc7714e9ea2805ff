"""DDP on CPU with gloo and 2 processes: global UniFrac pairs, identical splits, one checkpoint, predict."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from aam.data.dataset import AmpliconData, BatchCollator, MatrixDistanceLookup, SampleDataset
from aam.models import EncoderConfig, SequenceEncoder
from aam.training.distributed import DistributedContext, gather_with_grad
from aam.training.losses import MultiTaskLoss
from aam.training.trainer import Trainer, TrainerConfig, forward_batch

TINY = ["--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--token-limit", "16",
        "--batch-size", "8", "--epochs", "1", "--seed", "5", "--device", "cpu", "--quiet"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_problem(n_samples: int = 8):
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
    trainer = Trainer(model, loss, TrainerConfig(mask_nucleotides=False, progress=False), device=torch.device("cpu"),
                      distributed=context, distance_lookup=lookup)
    return model, trainer


def batch_of(data, rows, lookup):
    dataset = SampleDataset(data, rows, token_limit=16)
    return BatchCollator(data.tokens, data.sample_ids, lookup)([dataset[i] for i in range(len(dataset))])


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data, lookup = tiny_problem()
        model, trainer = model_and_trainer(DistributedContext(rank, world, rank), lookup)
        rows = np.arange(data.n_samples)[rank::world]  # this rank's share of the global batch
        batch = batch_of(data, rows, lookup)
        outputs = forward_batch(trainer.forward_model, batch)
        losses = trainer._training_losses(outputs, batch)
        losses["total"].backward()
        gathered = gather_with_grad(batch.sample_index)
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        torch.save({"unifrac": losses["unifrac"], "rows": gathered, "grads": grads}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_global_pairwise_loss_and_gradients_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
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


def torchrun(*args, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), "-m", "aam", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_pretrain_and_train_then_predict(synthetic_dir, tmp_path):
    pretrain = torchrun("pretrain", "--table", synthetic_dir["table"], "--tree", synthetic_dir["tree"],
                        "--output-dir", tmp_path / "pre", "--distributed", *TINY, cwd=tmp_path)
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    log = (tmp_path / "pre" / "training.log").read_text()
    assert "split is identical on all 2 ranks" in log
    assert sorted(p.name for p in (tmp_path / "pre" / "checkpoints").iterdir()) == ["best_model.pt", "last_model.pt"]

    train = torchrun("train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
                     "--metadata-column", "target", "--categorical-columns", "site", "--count-embedding",
                     "--pretrained-encoder", tmp_path / "pre" / "pretrained_encoder.pt",
                     "--output-dir", tmp_path / "train", "--distributed", *TINY, cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    val = pd.read_csv(tmp_path / "train" / "val_predictions.tsv", sep="\t", dtype={"sample_id": str})
    expected = set((tmp_path / "train" / "val_samples.txt").read_text().split())
    assert len(val) == len(expected) and set(val["sample_id"]) == expected  # every sample once, none twice

    from click.testing import CliRunner

    from aam.cli import cli

    result = CliRunner().invoke(cli, ["predict", "--model", str(tmp_path / "train" / "checkpoints" / "best_model.pt"),
                                      "--table", str(synthetic_dir["table"]), "--metadata",
                                      str(synthetic_dir["metadata"]), "--output", str(tmp_path / "p.tsv"), "--quiet"])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv(tmp_path / "p.tsv", sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    np.testing.assert_allclose(predicted.loc[val["sample_id"], "prediction"], val["prediction"], rtol=1e-4, atol=1e-4)
