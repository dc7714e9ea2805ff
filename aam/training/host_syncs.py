"""Counting the times a training step makes the host wait for the device (issue #29: none in steady state).

:func:`counting_host_syncs` counts calls of every Tensor method that waits for the device's values (reading
values, Python truth and numbers, and ops whose output shape depends on the data), on any device, so a CPU run
shows the code paths a GPU would stall on. On CUDA it also sets ``torch.cuda.set_sync_debug_mode("warn")`` and
counts the synchronising CUDA calls it reports, which catches what no Tensor method shows.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch

HOST_SYNCS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero",
              "unique", "masked_select", "repeat_interleave")
CUDA_SYNC = "cuda sync"  # the key counting what set_sync_debug_mode reported


def host_resident_state(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's step counters: torch keeps them on the host (outside fused or capturable modes), so
    reading them never waits for a GPU, though on a CPU run they look like any other tensor."""
    return [state["step"] for state in optimizer.state.values()
            if torch.is_tensor(state.get("step")) and state["step"].device.type == "cpu"]


@contextlib.contextmanager
def counting_host_syncs(device: torch.device | None = None,
                        host_resident: Sequence[torch.Tensor] = ()) -> Iterator[dict[str, int]]:
    """Within the block, ``{method or CUDA_SYNC: calls}`` fills as the code waits for ``device`` (any device
    when None): calls on tensors elsewhere (a CPU tensor never makes a GPU wait) or in ``host_resident``
    (:func:`host_resident_state`) are not counted. Restores the Tensor methods (and the CUDA sync debug mode)
    on exit."""
    counts: dict[str, int] = {}
    originals = {name: getattr(torch.Tensor, name) for name in HOST_SYNCS}
    skipped = {id(t) for t in host_resident}

    def wrap(name):
        def counted(self, *args, **kwargs):
            if (device is None or self.device.type == device.type) and id(self) not in skipped:
                counts[name] = counts.get(name, 0) + 1
            return originals[name](self, *args, **kwargs)
        return counted

    cuda = device is not None and device.type == "cuda" and torch.cuda.is_available()
    previous = torch.cuda.get_sync_debug_mode() if cuda else 0
    for name in HOST_SYNCS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            yield counts
        reported = sum("synchroniz" in str(w.message).lower() for w in caught)
        if reported:
            counts[CUDA_SYNC] = reported
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(previous)
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
