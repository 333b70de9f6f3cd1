"""Finiteness of weights: a NaN or infinite weight is an error wherever weights enter ip2n.

A network with a NaN weight renders black images and edits into NaN latents without any error, so
the loaders, the conversion and `ip2n weights check` all refuse such a file, naming the tensor.
The checks read tensors in chunks of `CHUNK_NUMBERS`, so memory stays bounded whatever the size of
a tensor (memory-mapped official files, or a converted file read through its header).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch

CHUNK_NUMBERS = 1 << 22  # numbers summed at a time (16 MB of float32)
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def non_finite_tensor(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or ±inf, or None. Meta tensors are skipped."""
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or tensor.is_meta or not tensor.is_floating_point():
            continue
        if not all(_finite(chunk) for chunk in _chunks(tensor)):
            return key
    return None


def non_finite_in_safetensors(path: str | os.PathLike, keys: Iterable[str]) -> str | None:
    """Like `non_finite_tensor` for tensors `keys` of a safetensors file, read a slice at a time."""
    from safetensors import safe_open

    with safe_open(Path(path), framework="pt") as handle:
        for key in keys:
            tensor = handle.get_slice(key)
            if tensor.get_dtype() not in _FLOAT_DTYPES:
                continue
            shape = tensor.get_shape()
            if not shape:
                if not _finite(handle.get_tensor(key)):
                    return key
                continue
            row = math.prod(shape[1:])
            step = max(1, CHUNK_NUMBERS // max(row, 1))
            for start in range(0, shape[0], step):
                if not _finite(tensor[start : start + step]):
                    return key
    return None


def _chunks(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """Views of `tensor` of at most about CHUNK_NUMBERS numbers each (nothing is copied)."""
    if tensor.dim() == 0 or tensor.numel() <= CHUNK_NUMBERS:
        yield tensor
        return
    if tensor.dim() == 1:
        for start in range(0, tensor.shape[0], CHUNK_NUMBERS):
            yield tensor[start : start + CHUNK_NUMBERS]
        return
    row = tensor[0].numel()
    if row > CHUNK_NUMBERS:
        for index in range(tensor.shape[0]):
            yield from _chunks(tensor[index])
        return
    step = CHUNK_NUMBERS // max(row, 1)
    for start in range(0, tensor.shape[0], step):
        yield tensor[start : start + step]


def _finite(chunk: torch.Tensor) -> bool:
    # A sum is NaN or ±inf when some value is, and needs no buffer of the chunk's size (unlike
    # isfinite().all()). Narrow floats are summed in float32, which they cannot overflow; a float32 or
    # float64 sum can overflow for huge finite values, so a non-finite sum is confirmed value by value.
    accumulate = chunk.dtype if chunk.dtype in (torch.float32, torch.float64) else torch.float32
    if math.isfinite(float(chunk.sum(dtype=accumulate))):
        return True
    return bool(torch.isfinite(chunk).all())
