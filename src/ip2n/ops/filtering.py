"""FIR filtering for alias-free resampling of feature maps (StyleGAN2 style).

A filter is a 2-D tensor `f` of shape (fh, fw). All functions treat every channel independently
(depthwise) and compute a true convolution with `f` (not a correlation), so that asymmetric
filters behave like the StyleGAN2 reference. Padding is given as (left, right, top, bottom);
negative values crop.

`upfirdn2d` is the general reference: zero-insertion upsampling, padding, filtering, decimation.
`upsample2d`, `downsample2d` and `filter2d` are the same maths for the three special cases the
networks need, computed without the wasted work on inserted zeros or dropped samples; the tests
check them against `upfirdn2d`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Padding = tuple[int, int, int, int]


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1), normalize: bool = True) -> torch.Tensor:
    """1-D taps → separable 2-D filter (len, len), the outer product, normalised to sum 1.

    The result is created on the current default device (so it follows `with torch.device(...)`).
    """
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim != 1 or f.numel() == 0:
        raise ValueError(f"filter taps must be a non-empty 1-D sequence, got shape {tuple(f.shape)}")
    f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    return f


def _as_padding(padding: int | Sequence[int]) -> Padding:
    if isinstance(padding, int):
        return (padding, padding, padding, padding)
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    if len(padding) != 4:
        raise ValueError(f"padding must be an int, (x, y) or (left, right, top, bottom), got {padding}")
    return tuple(padding)  # type: ignore[return-value]


def _depthwise_kernel(f: torch.Tensor, channels: int, gain: float, x: torch.Tensor) -> torch.Tensor:
    """(fh, fw) filter → (C, 1, fh, fw) conv weight; flipped because conv2d correlates."""
    kernel = (f * gain).to(dtype=x.dtype, device=x.device).flip([0, 1])
    return kernel.expand(channels, 1, *f.shape)


def _padded_depthwise_conv(
    x: torch.Tensor, kernel: torch.Tensor, padding: Padding, stride: int = 1
) -> torch.Tensor:
    left, right, top, bottom = padding
    if left == right and top == bottom and left >= 0 and top >= 0:
        # Symmetric padding inside the convolution avoids materialising a padded copy.
        return F.conv2d(x, kernel, stride=stride, padding=(top, left), groups=x.shape[1])
    return F.conv2d(F.pad(x, [left, right, top, bottom]), kernel, stride=stride, groups=x.shape[1])


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with `f`·gain, keep every `down`-th sample.

    x: (N, C, H, W) → (N, C, (H·up + top + bottom − fh + 1) / down, (W·up + left + right − fw + 1) / down)
    (divisions rounded up).
    """
    batch, channels, height, width = x.shape
    left, right, top, bottom = _as_padding(padding)
    if up > 1:
        # (N, C, H, 1, W, 1) padded to (N, C, H, up, W, up): each sample followed by up − 1 zeros.
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    x = _padded_depthwise_conv(x, _depthwise_kernel(f, channels, gain, x), (left, right, top, bottom))
    return x[:, :, ::down, ::down]


def filter2d(
    x: torch.Tensor, f: torch.Tensor, padding: int | Sequence[int] = 0, gain: float = 1.0
) -> torch.Tensor:
    """Convolve every channel with `f`·gain (= upfirdn2d with up = down = 1).

    x: (N, C, H, W) → (N, C, H + top + bottom − fh + 1, W + left + right − fw + 1).
    """
    return _padded_depthwise_conv(x, _depthwise_kernel(f, x.shape[1], gain, x), _as_padding(padding))


def upsample2d(x: torch.Tensor, f: torch.Tensor, factor: int = 2, gain: float = 1.0) -> torch.Tensor:
    """Upsample by `factor` with the anti-imaging filter `f`: (N, C, H, W) → (N, C, H·factor, W·factor).

    Same result as `upfirdn2d(x, f, up=factor, padding=p, gain=gain·factor²)` with the centring
    padding p = ((fw + factor − 1) // 2, (fw − factor) // 2, ...), computed as one depthwise
    transposed convolution (polyphase form: no multiplications with inserted zeros).
    """
    fh, fw = f.shape
    # Transposed-conv padding and output padding that reproduce the centring padding above.
    pad_y, pad_x = fh - 1 - (fh + factor - 1) // 2, fw - 1 - (fw + factor - 1) // 2
    extra_y = factor + (fh - factor) // 2 - (fh + factor - 1) // 2 - 1
    extra_x = factor + (fw - factor) // 2 - (fw + factor - 1) // 2 - 1
    if min(pad_y, pad_x, extra_y, extra_x) < 0:
        return upfirdn2d(
            x,
            f,
            up=factor,
            gain=gain * factor**2,
            padding=((fw + factor - 1) // 2, (fw - factor) // 2, (fh + factor - 1) // 2, (fh - factor) // 2),
        )
    # conv_transpose2d scatters with the kernel as is, i.e. it already convolves: no flip.
    kernel = (f * (gain * factor**2)).to(dtype=x.dtype, device=x.device).expand(x.shape[1], 1, fh, fw)
    return F.conv_transpose2d(
        x, kernel, stride=factor, padding=(pad_y, pad_x), output_padding=(extra_y, extra_x), groups=x.shape[1]
    )


def downsample2d(x: torch.Tensor, f: torch.Tensor, factor: int = 2, gain: float = 1.0) -> torch.Tensor:
    """Anti-aliased downsampling by `factor`: (N, C, H, W) → (N, C, H / factor, W / factor).

    Same result as `upfirdn2d(x, f, down=factor, padding=p, gain=gain)` with the centring padding
    p = ((fw − factor + 1) // 2, (fw − factor) // 2, ...), as one strided depthwise convolution.
    """
    fh, fw = f.shape
    padding = ((fw - factor + 1) // 2, (fw - factor) // 2, (fh - factor + 1) // 2, (fh - factor) // 2)
    return _padded_depthwise_conv(x, _depthwise_kernel(f, x.shape[1], gain, x), padding, stride=factor)
