"""The GPU's busy share of a profile: overlapping kernels count once, gaps between them count as idle."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from models.benchmarks.diagnostics import _busy


def _kernel(start: float, end: float, device=DeviceType.CUDA, annotation: bool = False):
    return SimpleNamespace(
        device_type=device, is_user_annotation=annotation, time_range=SimpleNamespace(start=start, end=end)
    )


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([_kernel(0, 400), _kernel(600, 1000)], "GPU busy 0.8 ms of 1.0 ms profiled (80.0%); idle 0.2 ms"),
        ([_kernel(0, 700), _kernel(300, 1000)], "GPU busy 1.0 ms of 1.0 ms profiled (100.0%); idle 0.0 ms"),
        (  # a step annotation spanning everything and host events are not kernels
            [_kernel(0, 500), _kernel(900, 1000), _kernel(0, 5000, annotation=True), _kernel(0, 9, DeviceType.CPU)],
            "GPU busy 0.6 ms of 1.0 ms profiled (60.0%); idle 0.4 ms",
        ),
        ([], "no GPU kernels profiled"),
    ],
)
def test_busy_share_merges_overlapping_kernels(events, expected):
    assert _busy(SimpleNamespace(events=lambda: events)) == expected
