"""Stride-1 "same" convolutions through NNPACK's Winograd kernels, where they beat oneDNN: inference on
one thread.

On AVX2 CPUs like the reference machine, NNPACK's 3×3 convolution of a 512² map with 128 channels
takes 0.65 s on one thread against oneDNN's 1.1–1.8 s, and its results differ from `F.conv2d`'s by about
1e-5 of their range. On one thread a 512² EG3D view then takes 0.5–1 s less (render and
super-resolution 4.6–5.8 s against 5.5–6.2 s, tri-planes 1.7–1.9 s against 1.8–2.0 s).

oneDNN gains far more from a second thread than NNPACK does: on two threads the same view takes as
long either way (alternating in one process: 2.8–3.1 s against 2.95 s), while NNPACK's workspace,
which torch allocates once and never frees, adds 100–300 MB to the peak memory. So NNPACK is used
only when torch runs on `NNPACK_MAX_THREADS` thread(s), and only where it is known to help and to be
right: float32 CPU tensors, nothing that needs gradients (training keeps oneDNN and its autograd),
square kernels of 3×3 or more, at most 256 × 256 channels, and maps of at least
`NNPACK_MIN_PIXELS`. `exact_convolutions()` turns it off, for comparisons that must be bit-for-bit
those of `F.conv2d`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F

NNPACK_MIN_PIXELS = (
    64 * 64
)  # smaller maps: oneDNN is as fast or faster (3×3, 512 channels at 32²: 95 ms against 118)
# NNPACK transforms the whole kernel first: 64 values per (input, output) channel pair, i.e. 67 MB for
# 512 → 512 channels. Those layers (the backbone's 64² maps) stay on oneDNN to keep the peak memory.
NNPACK_MAX_CHANNEL_PAIRS = 256 * 256
NNPACK_BAND_ELEMENTS = 128 * 64 * 512  # input values per band: 64 rows of a 128-channel 512² map (16 MB)
NNPACK_MIN_BAND_ROWS = 16
NNPACK_MAX_THREADS = 1  # with more torch threads oneDNN is as fast (see the module docstring)
_enabled = [True]


@functools.cache
def nnpack_ready() -> bool:
    """Whether this torch build has NNPACK and this CPU runs it. The check also initialises the
    library: before it, every NNPACK convolution fails."""
    return bool(torch.backends.nnpack.is_available())


@contextlib.contextmanager
def exact_convolutions() -> Iterator[None]:
    """Within the block, every convolution is `F.conv2d` (oneDNN)."""
    previous = _enabled[0]
    _enabled[0] = False
    try:
        yield
    finally:
        _enabled[0] = previous


def uses_nnpack(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `conv2d_same(x, weight, ...)` goes through NNPACK."""
    kh, kw = weight.shape[-2:]
    return (
        _enabled[0]
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and kh == kw
        and kh >= 3
        and weight.shape[0] * weight.shape[1] <= NNPACK_MAX_CHANNEL_PAIRS
        and x.shape[-2] * x.shape[-1] >= NNPACK_MIN_PIXELS
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and torch.get_num_threads() <= NNPACK_MAX_THREADS
        and nnpack_ready()
    )


def conv2d_same(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """`F.conv2d(x, weight, padding=padding)` (stride 1, no bias), through NNPACK when `uses_nnpack`.

    NNPACK's workspace for a whole map is several times the map (about 600 MB for 128 channels at
    512²), so the map is convolved in bands of rows of about `NNPACK_BAND_ELEMENTS` values each, with
    `padding` rows of overlap; the bands are no slower. The result is contiguous NCHW.
    """
    if not uses_nnpack(x, weight):
        return F.conv2d(x, weight, padding=padding)
    batch, channels, height, width = x.shape
    weight = weight.contiguous()
    bias = weight.new_zeros(weight.shape[0])  # NNPACK's entry point requires one
    rows = max(NNPACK_MIN_BAND_ROWS, NNPACK_BAND_ELEMENTS // (batch * channels * width))
    if rows >= height:
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [padding, padding])
    out = x.new_empty(batch, weight.shape[0], height, width)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        first, last = max(top - padding, 0), min(bottom + padding, height)  # input rows the band reads
        band = x[:, :, first:last].contiguous()
        if first > top - padding or last < bottom + padding:  # the map's own border: zeros, as padding
            band = F.pad(band, (0, 0, first - (top - padding), (bottom + padding) - last))
        out[:, :, top:bottom] = torch._nnpack_spatial_convolution(band, weight, bias, [0, padding])
    return out
