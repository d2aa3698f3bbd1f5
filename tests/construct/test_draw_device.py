"""Where the frozen weights are drawn: the CPU, except huge GPU constructions."""

import torch

from normonly.construct.wide import DEVICE_DRAW_MIN, _draw_device
from normonly.nets.wide import NormNet


def test_only_huge_gpu_constructions_draw_on_the_gpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    small = [64, 8192, 64]  # 1M weights
    huge = [512, 524288, 512]  # 5.4e8 weights > DEVICE_DRAW_MIN
    assert sum(a * b for a, b in zip(huge[:-1], huge[1:])) > DEVICE_DRAW_MIN
    assert _draw_device(small, cuda) is None
    assert _draw_device(huge, cpu) is None
    assert _draw_device(huge, cuda) == cuda


def test_cpu_draws_are_the_documented_stream():
    """The first layer is N(0, 1/d_in) from a CPU generator seeded with ``seed``, in order."""
    g = torch.Generator().manual_seed(7)
    first = torch.randn(40, 4, generator=g, dtype=torch.float64) / 4**0.5
    for net in (NormNet([4, 40, 3], seed=7), NormNet([4, 40, 3], seed=7, device="cpu")):
        assert torch.equal(net.linears[0].weight, first)
