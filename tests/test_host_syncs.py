"""The host-sync counter behind the GPU check's ``syncs`` and the DDP step test (issue #29 point 2)."""

from __future__ import annotations

import torch

from aam.training.host_syncs import HOST_SYNCS, counting_host_syncs, host_resident_state


def test_counts_what_waits_for_the_device_and_restores_the_methods():
    originals = {name: getattr(torch.Tensor, name) for name in HOST_SYNCS}
    x, counter = torch.arange(5.0), torch.zeros(())
    with counting_host_syncs(torch.device("cpu"), host_resident=[counter]) as counts:
        x.sum().item()
        bool(x.max() > 2)
        x.nonzero()
        counter.item()  # host-resident state: not counted
        y = x * 2  # no wait
    assert counts == {"item": 1, "__bool__": 1, "nonzero": 1} and y.shape == x.shape
    assert {name: getattr(torch.Tensor, name) for name in HOST_SYNCS} == originals
    with counting_host_syncs(torch.device("cuda")) as counts:  # CPU tensors never make a GPU wait
        x.sum().item()
    assert counts == {}


def test_the_optimizers_step_counters_are_host_resident_state():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    assert host_resident_state(optimizer) == []  # no state before the first step
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    steps = host_resident_state(optimizer)
    assert len(steps) == 2 and all(t.dim() == 0 and t.item() == 1 for t in steps)
