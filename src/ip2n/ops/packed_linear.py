"""Linear layers whose weights oneDNN packs once, for a loop of few-row products on a CPU.

`F.linear` prepares (packs) its weight matrix for the CPU kernels on every call. When a call
multiplies only a few rows, as each of the DiT's sampling steps does (2 guidance branches × 16
tokens = 32 rows), that preparation is a large share of the work: a 32-row product with a
768 × 3072 weight takes 1.5–1.6 ms packed against 2.3–3.2 ms plain on the reference machine's two
cores. `packed_linears` packs the weights once for a loop and unpacks on exit: the copies (about
400 MB for the released DiT's per-step layers) live only while the loop runs. Each copy (under 32 MB)
comes from the C heap, which keeps freed memory for reuse, so on exit the freed pages are handed back
to the system (`ip2n.heap`); otherwise they would stay in the process and raise the peak memory of
whatever runs next.

Results differ from `F.linear`'s by about 1e-5 of their range (a different summation order).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ip2n.heap import release_free_heap


@functools.cache
def _packing_ops_available() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return all(
            callable(getattr(torch.ops.mkldnn, name))
            for name in ("_reorder_linear_weight", "_linear_pointwise")
        )
    except (AttributeError, RuntimeError):  # a torch build without these oneDNN entry points
        return False


def packing_applies(linears: Sequence[nn.Linear]) -> bool:
    """Whether `packed_linears` packs these layers: inference (no gradients) on float32 CPU weights
    with torch's oneDNN linear kernels present. Elsewhere (GPU, training) it leaves them as they are."""
    return (
        not torch.is_grad_enabled()
        and all(
            linear.weight.device.type == "cpu" and linear.weight.dtype == torch.float32 for linear in linears
        )
        and _packing_ops_available()
    )


def _packed_forward(packed_weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias, "none", [], "")


@contextlib.contextmanager
def packed_linears(linears: Sequence[nn.Linear], rows: int) -> Iterator[None]:
    """Within the block, each of `linears` multiplies with a oneDNN-packed copy of its weight.

    `rows`: the number of rows per call the packing is tuned for (other sizes still work). Where
    `packing_applies` is false the layers run unchanged. The layers' parameters and state dicts are
    never touched; on exit the layers are plain `nn.Linear`s again and the copies are freed.
    """
    if not packing_applies(linears):
        yield
        return
    patched: list[nn.Linear] = []
    try:
        for linear in linears:
            packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight, rows)
            # An instance attribute shadows the class's forward; deleting it restores the plain layer.
            # (mypy flags any assignment to a method; shadowing it per instance is the point here.)
            linear.forward = functools.partial(_packed_forward, packed, linear.bias)  # type: ignore[method-assign]
            patched.append(linear)
        yield
    finally:
        for linear in patched:
            del linear.forward  # drops the last reference to its packed copy
        if patched:
            release_free_heap()
