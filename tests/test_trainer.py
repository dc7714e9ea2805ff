"""The training loop itself: accumulation, early stopping, scheduler steps, bf16/fp16 steps, step checkpoints,
stop signals and an exact mid-epoch resume, progress lines for logs read from a file."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import aam.training.trainer as trainer_module
from aam.data.dataset import AmpliconData, BatchCollator, EpochShuffleSampler, SampleDataset, make_loader
from aam.models import EncoderConfig, PredictorConfig, SequencePredictor
from aam.models.asv_encoder import ASVNorm
from aam.objectives.losses import MultiTaskLoss, build_target_loss
from aam.outputs.checkpoint import Snapshot, load_checkpoint
from aam.training.precision import Precision
from aam.training.preemption import RunInterrupted
from aam.training.strategy import build_strategy
from aam.training.trainer import EvalResult, Trainer, TrainerConfig

CONFIG = PredictorConfig(encoder=EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2, attention_layers=1,
                                               token_limit=32, dropout=0.0))


def _data(n: int = 10, n_asvs: int = 12, floor: int = 0) -> tuple[AmpliconData, np.ndarray]:
    """``n`` samples of ``n_asvs`` random 20-nt ASVs; counts below ``floor`` are zeroed (sparser samples)."""
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(n, n_asvs)).astype(np.float32)
    counts[counts < floor] = 0
    counts[:, 0] += 1
    tokens = np.zeros((n_asvs, 21), dtype=np.uint8)
    tokens[:, 0] = 6
    tokens[:, 1:] = rng.integers(1, 5, size=(n_asvs, 20))
    data = AmpliconData(counts, tokens, [f"s{i}" for i in range(n)], [f"a{j}" for j in range(n_asvs)])
    return data, rng.normal(size=n).astype(np.float32)


def _loader(batch_size: int, n: int = 10, seed: int = 0):
    data, targets = _data(n)
    dataset = SampleDataset(data, targets=targets, token_limit=32, asv_sampling="abundance", seed=seed)
    return make_loader(dataset, BatchCollator(data.tokens, data.sample_ids), batch_size, shuffle=True,
                       sampler=EpochShuffleSampler(n, seed))


def _trainer(config: PredictorConfig = CONFIG, nucleotides: bool = False, **settings) -> Trainer:
    torch.manual_seed(0)
    model = SequencePredictor(config)
    loss = MultiTaskLoss(target_penalty=1.0, penalty=0.0, nuc_penalty=1.0 if nucleotides else 0.0,
                         count_penalty=0.0, target_loss=build_target_loss("mse"))
    settings = {"progress": False, "mask_nucleotides": nucleotides, "scheduler": "cosine", **settings}
    return Trainer(model, loss, TrainerConfig(**settings), device=torch.device("cpu"))


def _fixed_norm_statistics(trainer: Trainer) -> Trainer:
    """ASVNorm updates running statistics from each batch, so a model's state depends on how samples are
    batched; holding them fixed leaves the loop's arithmetic as the only difference between two batchings."""
    for module in trainer.model.modules():
        if isinstance(module, ASVNorm):
            module.momentum = 0.0
            module.num_batches_tracked.fill_(1)
    return trainer


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("n", [10, 9], ids=["partial-group", "partial-group-and-short-batch"])
def test_accumulating_k_batches_equals_one_batch_k_times_larger(n):
    """SGD makes any mis-scaled group visible: groups of 2+2 | 2+2 | 2 (or 2+2 | 2+2 | 1) against 4 | 4 | 2."""
    small = _fixed_norm_statistics(_trainer(optimizer="sgd", lr=0.05, epochs=2, gradient_accumulation_steps=2,
                                            weight_decay=0.0))
    large = _fixed_norm_statistics(_trainer(optimizer="sgd", lr=0.05, epochs=2, weight_decay=0.0))
    small.fit(_loader(2, n), _loader(5, n))
    large.fit(_loader(4, n), _loader(5, n))
    assert small.global_step == large.global_step == 6
    for key, value in _weights(large).items():
        torch.testing.assert_close(_weights(small)[key], value, rtol=1e-4, atol=1e-6)
    assert small.history[-1]["train_loss"] == pytest.approx(large.history[-1]["train_loss"], rel=1e-4)


def test_early_stopping_stops_at_the_right_epoch_on_scripted_losses(monkeypatch, caplog):
    trainer = _trainer(epochs=20, patience=2)
    losses = iter([5.0, 4.0, 4.5, 4.2, 3.0, 1.0])
    monkeypatch.setattr(trainer, "train_epoch", lambda loader, epoch: {"train_loss": 1.0})
    monkeypatch.setattr(trainer, "evaluate", lambda loader: EvalResult({"val_loss": next(losses)}))
    with caplog.at_level(logging.INFO):
        result = trainer.fit(_loader(4), _loader(4))
    assert [row["epoch"] for row in result.history] == [0, 1, 2, 3]  # epochs 3 and 4 did not improve on 4.0
    assert result.best_epoch == 1 and result.best_metric == 4.0
    assert "best 4 at epoch 2" in caplog.text  # epochs are counted from 1 in the log, as in the summary


@pytest.mark.parametrize(("name", "accumulation", "expected"), [
    ("warmup_cosine", 1, 3 * 3), ("onecycle", 2, 3 * 2), ("plateau", 1, 3)])
def test_schedulers_step_the_planned_number_of_times_through_fit(monkeypatch, name, accumulation, expected):
    built = []
    original = trainer_module.build_scheduler

    def counting(*args, **kwargs):
        handle = original(*args, **kwargs)
        handle.calls = 0
        step = handle.step

        def counted(*a, **k):
            handle.calls += 1
            return step(*a, **k)

        handle.step = counted
        built.append(handle)
        return handle

    monkeypatch.setattr(trainer_module, "build_scheduler", counting)
    trainer = _trainer(scheduler=name, epochs=3, gradient_accumulation_steps=accumulation)
    trainer.fit(_loader(4), _loader(5))  # 3 batches per epoch
    assert len(built) == 1 and built[0].calls == expected


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_one_mixed_precision_step_on_cpu_tracks_fp32(precision):
    reference = _trainer(epochs=1, lr=1e-3)
    mixed = _trainer(epochs=1, lr=1e-3, mixed_precision=precision)
    before = _weights(mixed)
    loader = _loader(10)
    fp32 = reference.fit(loader, _loader(10)).history[0]["train_loss"]
    low = mixed.fit(loader, _loader(10)).history[0]["train_loss"]
    assert math.isfinite(low) and low == pytest.approx(fp32, rel=0.05)  # same weights, same batch
    assert any(not torch.equal(before[k], v) for k, v in _weights(mixed).items())  # the step was taken
    assert mixed.precision.scaler.is_enabled() == (precision == "fp16")
    if precision == "fp16":
        assert mixed.precision.scaler.get_scale() > 1.0  # gradients went through the loss scaler


class _SignalAt:
    """A loader that sends a real signal to this process as it yields batch ``at`` of epoch ``epoch``."""

    def __init__(self, loader, epoch: int, at: int, number: int = signal.SIGTERM):
        self.loader, self.epoch, self.at, self.number = loader, epoch, at, number
        self.sampler, self.batch_size = loader.sampler, loader.batch_size
        self.dataset = loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if self.sampler.epoch == self.epoch and i == self.at:
                os.kill(os.getpid(), self.number)
            yield batch


def _saver(folder: Path, saved: list[str]):
    def save(name: str, snapshot: Snapshot) -> Path:
        saved.append(f"{name}:{snapshot.training_state.get('epoch_progress', {}).get('batches', 'end')}")
        return snapshot.write(folder / f"{name}_model", kind="predictor", model_config=CONFIG.to_dict())
    return save


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_stop_signal_writes_a_step_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path, number):
    """Dropout and nucleotide masking draw random numbers and the loader reshuffles: the resumed run must
    restore all of it to land on the same weights and the same epoch losses."""
    config = PredictorConfig(encoder=EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2,
                                                   attention_layers=1, token_limit=32, dropout=0.1))
    settings = {"epochs": 3, "lr": 3e-3, "gradient_accumulation_steps": 2}
    whole = _trainer(config, nucleotides=True, **settings)
    whole.fit(_loader(2), _loader(5))

    saved: list[str] = []
    cut = _trainer(config, nucleotides=True, **settings)
    cut.save_checkpoint = _saver(tmp_path, saved)
    previous = signal.getsignal(number)
    with pytest.raises(RunInterrupted) as stopped:
        cut.fit(_SignalAt(_loader(2), epoch=1, at=2, number=number), _loader(5))
    assert signal.getsignal(number) == previous  # handlers are restored
    stop = stopped.value
    assert stop.exit_code == 128 + number and stop.checkpoint == str(tmp_path / "last_model.pt")
    assert "--resume-from" in stop.one_line("aam train --x 1") and "epoch 2, batch 4" in stop.where
    assert saved == ["best:end", "last:end", "last:4"]  # after batch 3 the group of 2 is completed: 4 batches

    checkpoint = load_checkpoint(tmp_path / "last_model.pt")
    resumed = _trainer(config, nucleotides=True, **settings)
    resumed.model.load_state_dict(checkpoint["model_state"])
    resumed.load_training_state(checkpoint["training_state"])
    resumed.fit(_loader(2), _loader(5))
    for key, value in _weights(whole).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=0, atol=0)
    for row, expected in zip(resumed.history, whole.history, strict=True):
        for key in ("train_loss", "train_nucleotide_loss", "val_loss"):
            assert row[key] == pytest.approx(expected[key], rel=1e-6)


def test_step_checkpoints_every_n_steps_keep_only_the_last(tmp_path):
    saved: list[str] = []
    trainer = _trainer(epochs=2, checkpoint_every_steps=2)
    trainer.save_checkpoint = _saver(tmp_path, saved)
    trainer.fit(_loader(2), _loader(5))  # 5 steps per epoch: steps 2, 4 | 6, 8, 10 (10 ends epoch 2)
    assert [s for s in saved if s.startswith("last")] == ["last:2", "last:4", "last:end", "last:1", "last:3", "last:end"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.pt", "last_model.pt"]
    assert load_checkpoint(tmp_path / "last_model.pt")["training_state"]["epoch"] == 1


def test_validation_every_n_steps_is_logged_and_leaves_training_unchanged(caplog):
    """Dropout and nucleotide masking draw random numbers: scoring the validation samples mid-epoch must not
    move the training streams, so the weights equal those of a run without it."""
    config = PredictorConfig(encoder=EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2,
                                                   attention_layers=1, token_limit=32, dropout=0.1))
    plain = _trainer(config, nucleotides=True, epochs=2, lr=3e-3)
    plain.fit(_loader(2), _loader(5))
    watched = _trainer(config, nucleotides=True, epochs=2, lr=3e-3, val_every_steps=2)
    with caplog.at_level(logging.INFO, logger="aam.training.trainer"):
        watched.fit(_loader(2), _loader(5), _loader(3, n=6))
    # 5 steps per epoch: steps 2, 4 | 6, 8 (10 ends epoch 2, where the full validation runs anyway)
    assert [row["step"] for row in watched.step_history] == [2, 4, 6, 8]
    assert [row["epoch"] for row in watched.step_history] == [0, 0, 1, 1]
    assert all(np.isfinite(row["val_loss"]) and "val_nucleotide_accuracy" in row for row in watched.step_history)
    lines = [r.getMessage() for r in caplog.records if "validation subsample" in r.getMessage()]
    assert len(lines) == 4 and lines[0].startswith("epoch 1/2  step 2  (validation subsample)  val_loss=")
    for key, value in _weights(plain).items():
        torch.testing.assert_close(_weights(watched)[key], value, rtol=0, atol=0)
    assert [row["val_loss"] for row in watched.history] == pytest.approx([row["val_loss"] for row in plain.history])


def test_the_step_validation_loader_is_a_fixed_subsample():
    from aam.workflows.inputs import step_validation_loader

    full = _loader(5, n=10)
    first = step_validation_loader(full, 4, seed=1)
    ids = [i for batch in first for i in batch.sample_ids]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert ids == [i for batch in step_validation_loader(full, 4, seed=1) for i in batch.sample_ids]
    assert ids == [i for batch in first for i in batch.sample_ids]  # the same samples at every validation
    assert step_validation_loader(full, 10, seed=1) is full


def test_progress_lines_are_logged_when_no_bar_is_shown(caplog):
    trainer = _trainer(epochs=1, progress_interval=0.0)
    with caplog.at_level(logging.INFO, logger="aam.training.trainer"):
        trainer.fit(_loader(2), _loader(5))
    lines = [r.getMessage() for r in caplog.records if "samples/s" in r.getMessage()]
    assert len(lines) == 5 and lines[2].startswith("epoch 1/1  batch 3/5  step 3")
    assert all("loss" in line and "ETA 0:00:" in line for line in lines)


def test_sigterm_stops_aam_train_with_a_resume_line_and_the_resumed_run_finishes(synthetic_dir, tmp_path):
    """A real SIGTERM to a real ``aam train`` process whose output goes to a pipe, as under a scheduler."""
    out = tmp_path / "run"
    args = ["train", "--table", synthetic_dir["table"], "--metadata", synthetic_dir["metadata"],
            "--metadata-column", "target", "--embedding-dim", "16", "--attention-heads", "2",
            "--attention-layers", "1", "--token-limit", "24", "--batch-size", "4", "--seed", "3", "--device", "cpu",
            "--epochs", "12", "--patience", "12", "--checkpoint-every-steps", "3", "--progress-interval", "0",
            "--output-dir", out]
    process = subprocess.Popen([sys.executable, "-m", "aam", *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = out / "checkpoints" / "last_model.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    final = stderr.strip().splitlines()[-1]
    assert final.startswith("aam: stopped by SIGTERM at epoch ") and "Traceback" not in stderr
    assert final.endswith(f"--output-dir {out} --resume-from {last}") and " aam train --table " in final
    state = load_checkpoint(last)["training_state"]
    log_text = (out / "training.log").read_text()
    assert "samples/s" in log_text and "ETA" in log_text  # progress lines, since stderr was not a terminal

    command = shlex.split(final.split("resume with: ", 1)[1])
    assert command[0] == "aam"
    result = subprocess.run([sys.executable, "-m", "aam", *command[1:]], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    finished = load_checkpoint(last)["training_state"]
    assert finished["epoch"] == 11 and finished["global_step"] > state["global_step"]
    assert f"resumed from {last}" in (out / "training.log").read_text()


@pytest.mark.parametrize("backend", ["eager", pytest.param("aot_eager", marks=pytest.mark.slow)])
def test_compiled_training_traces_a_few_graphs_without_breaks_and_matches_eager(backend):
    """Batches of 3, 3 and 1 samples with different ASV counts, masked nucleotides, then evaluation. The mask
    is drawn outside the model and shapes are dynamic: one graph for training shapes, one for a batch of one
    (PyTorch specialises sizes 0 and 1), one for evaluation (no grad), and at most one more when two sizes
    happen to coincide in the first batch (duck sizing). "eager" counts what dynamo captures quickly;
    "aot_eager" also traces the backward pass."""
    torch._dynamo.reset()
    counters.clear()
    compiled = _trainer(epochs=1, nucleotides=True, compile_model=True, compile_backend=backend)
    plain = _trainer(epochs=1, nucleotides=True)
    torch.manual_seed(1)
    with_compile = compiled.fit(_loader(3, n=7), _loader(4, n=7)).history[0]
    torch.manual_seed(1)
    without = plain.fit(_loader(3, n=7), _loader(4, n=7)).history[0]
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert 3 <= counters["stats"]["unique_graphs"] <= 4
    for key in ("train_loss", "val_loss", "val_nucleotide_accuracy"):
        assert with_compile[key] == pytest.approx(without[key], rel=1e-4, abs=1e-6)


def test_full_batches_compile_a_fixed_set_of_graphs_that_later_epochs_reuse():
    """Pretraining's loader leaves out the partial batch, so every training batch has the same number of samples
    while its distinct ASVs and slots vary. With dynamic shapes and the nucleotide mask drawn outside the model
    (masked positions gathered to a width set by the sequence length), the first epoch compiles at most two
    training graphs (one more only when two sizes coincide in the first batch) and one for evaluation, and the
    next epochs, whose batches have other shapes, compile none."""
    def graphs(epochs: int) -> tuple[int, list[tuple[int, int]]]:
        torch._dynamo.reset()
        counters.clear()
        trainer = _trainer(epochs=epochs, nucleotides=True, compile_model=True, compile_backend="eager")
        data, targets = _data(14, n_asvs=40, floor=3)  # sparse samples: batches differ in distinct ASVs and slots
        dataset = SampleDataset(data, targets=targets, token_limit=32, asv_sampling="random", seed=0)
        collator = BatchCollator(data.tokens, data.sample_ids)
        loader = make_loader(dataset, collator, 4, shuffle=True, sampler=EpochShuffleSampler(14, 0), drop_last=True)
        shapes = [(len(b.tokens), b.asv_index.shape[1]) for epoch in range(epochs)
                  for b in (loader.sampler.set_epoch(epoch), list(loader))[1]]
        assert all(len(b.sample_ids) == 4 for b in loader) and len(loader) == 3  # 14 samples: 3 full batches
        trainer.fit(loader, _loader(4, n=7))
        assert not counters["graph_break"], dict(counters["graph_break"])
        return int(counters["stats"]["unique_graphs"]), shapes

    first, _ = graphs(1)
    later, shapes = graphs(3)
    assert len({u for u, _ in shapes}) >= 3 and len({s for _, s in shapes}) >= 3  # batches differ in shape
    assert 2 <= first <= 3 and later == first


def test_precision_objects_choose_autocast_and_scaling():
    cpu = torch.device("cpu")
    assert Precision(None, cpu).name == Precision("none", cpu).name == "fp32"
    with Precision("fp32", cpu).autocast():
        assert not torch.is_autocast_enabled("cpu")
    with Precision("bf16", cpu).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not Precision("bf16", cpu).scaler.is_enabled() and Precision("fp16", cpu).scaler.is_enabled()
    assert not Precision("fp32", cpu, tf32=True).tf32  # TF32 is a CUDA setting
    with pytest.raises(ValueError, match="unknown precision"):
        Precision("fp8", cpu)
    scaled = Precision("fp16", cpu)
    scaled.scaler.scale(torch.ones(()))  # creates the scale
    scaled.scaler.update(1024.0)
    restored = Precision("fp16", cpu)
    restored.load_state_dict(scaled.state_dict())
    assert restored.scaler.get_scale() == 1024.0


def test_strategy_follows_the_run_and_the_trainer_calls_it():
    assert build_strategy(None).name == "single"
    assert build_strategy(None, data_parallel=True).name == "data_parallel"
    assert not build_strategy(None, data_parallel=True).supports_compile
    trainer = _trainer(epochs=1)
    assert trainer.strategy.name == "single" and trainer.forward_model is trainer.model
    calls = []
    original = trainer.strategy.clip_grad_norm_
    trainer.strategy.clip_grad_norm_ = lambda params, norm: calls.append(norm) or original(params, norm)
    trainer.config = dataclasses.replace(trainer.config, max_grad_norm=0.5)
    trainer.fit(_loader(4), _loader(5))  # 3 batches, 3 optimizer steps
    assert calls == [0.5, 0.5, 0.5]


def test_a_run_resumed_after_it_stopped_early_trains_no_further(monkeypatch, tmp_path):
    saved: list[str] = []
    trainer = _trainer(epochs=20, patience=1)
    trainer.save_checkpoint = _saver(tmp_path, saved)
    losses = iter([5.0, 6.0, 1.0])
    monkeypatch.setattr(trainer, "train_epoch", lambda loader, epoch: {"train_loss": 1.0})
    monkeypatch.setattr(trainer, "evaluate", lambda loader: EvalResult({"val_loss": next(losses)}))
    first = trainer.fit(_loader(4), _loader(4))
    assert len(first.history) == 2 and trainer.early_stopping.should_stop
    state = load_checkpoint(tmp_path / "last_model.pt")["training_state"]
    resumed = _trainer(epochs=20, patience=1)
    resumed.load_training_state(state)
    monkeypatch.setattr(resumed, "train_epoch", lambda loader, epoch: pytest.fail("trained again"))
    again = resumed.fit(_loader(4), _loader(4))
    assert (again.best_epoch, again.best_metric, len(again.history)) == (0, 5.0, 2)


@pytest.mark.parametrize("memory", ["asv_chunk_size", "gradient_checkpointing"])
def test_compiled_training_with_recomputation_runs_and_matches_eager(memory):
    """Checkpointed regions run outside the compiled graph (one module checkpointed twice in a graph does not
    trace in PyTorch 2.13); the run works and its losses are those of the uncompiled model."""
    setting = {"asv_chunk_size": 4} if memory == "asv_chunk_size" else {"gradient_checkpointing": True}
    config = PredictorConfig(encoder=EncoderConfig(max_bp=20, embedding_dim=16, attention_heads=2,
                                                   attention_layers=1, token_limit=32, dropout=0.0, **setting))
    torch._dynamo.reset()
    compiled = _trainer(config, nucleotides=True, epochs=1, compile_model=True, compile_backend="eager")
    plain = _trainer(config, nucleotides=True, epochs=1)
    torch.manual_seed(1)
    with_compile = compiled.fit(_loader(3, n=7), _loader(4, n=7)).history[0]
    torch.manual_seed(1)
    without = plain.fit(_loader(3, n=7), _loader(4, n=7)).history[0]
    for key in ("train_loss", "val_loss"):
        assert with_compile[key] == pytest.approx(without[key], rel=1e-4, abs=1e-6)


def test_trainer_config_validates_and_rejects_unknown_keys():
    from aam.training.config import TrainerConfig

    config = TrainerConfig(lr=3e-4, ema_decay=0.99, mixed_precision="bf16")
    assert TrainerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainerConfig fields: epochz"):
        TrainerConfig.from_dict({**config.to_dict(), "epochz": 3})  # a typo must not pass for the default
    for bad, named in (({"lr": 0}, "lr"), ({"epochs": 0}, "epochs"), ({"optimizer": "lamb"}, "optimizer"),
                       ({"scheduler": "linear"}, "scheduler"), ({"ema_decay": 1.0}, "ema_decay"),
                       ({"mixed_precision": "fp8"}, "mixed_precision"), ({"best_metric": "aucpr"}, "aucpr"),
                       ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
                       ({"warmup_fraction": 1.0}, "warmup_fraction"), ({"val_every_steps": 0}, "val_every_steps")):
        with pytest.raises(ValueError, match=named):
            TrainerConfig(**bad)
