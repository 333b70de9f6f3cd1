"""Style-modulated convolution (StyleGAN2 weight (de)modulation), optionally upsampling by 2.

The styles scale the input channels of the kernel per sample; demodulation rescales every output
channel of the modulated kernel to unit L2 norm, which normalises the output statistics without
a data-dependent normalisation layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ip2n.ops.fast_conv import conv2d_same, uses_nnpack
from ip2n.ops.filtering import filter2d

DEMODULATION_EPS = 1e-8


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / ‖modulated kernel‖ per sample and output channel: weight (O, I, kh, kw), styles (N, I) → (N, O).

    ‖w[o] · s‖² = Σᵢ sᵢ² Σₖ w[o, i, k]², so the per-sample kernels are never materialised.
    """
    energy = weight.square().sum(dim=(2, 3))  # (O, I)
    return (styles.to(weight.dtype).square() @ energy.t() + DEMODULATION_EPS).rsqrt()


def upsample_conv2d(
    x: torch.Tensor, weight: torch.Tensor, resample_filter: torch.Tensor, padding: int
) -> torch.Tensor:
    """2× upsampling "same" convolution: zero insertion, conv with `weight`, low-pass `resample_filter`.

    x: (N, I, H, W), weight (O, I, kh, kw) → (N, O, 2H, 2W). Computed as a stride-2 transposed
    convolution followed by the filter (gain 4 restores the energy of the inserted zeros);
    `padding` is that of the equivalent convolution at the output resolution (k // 2).
    """
    kh, kw = weight.shape[2:]
    fh, fw = resample_filter.shape
    # conv_transpose2d wants (I, O, kh, kw). It scatters the kernel as is, i.e. it truly convolves
    # the zero-upsampled input with `weight` (no flip), which is the convention the official
    # upsampling layers were trained with (their stride-1 layers correlate, like F.conv2d).
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # (N, O, 2H + kh − 2, 2W + kw − 2)
    # Padding of the zero-upsampled map that centres the filter, minus what the transposed conv added.
    left = padding + (fw + 1) // 2 - (kw - 1)
    right = padding + (fw - 2) // 2 - (kw - 2)
    top = padding + (fh + 1) // 2 - (kh - 1)
    bottom = padding + (fh - 2) // 2 - (kh - 2)
    return filter2d(x, resample_filter, padding=(left, right, top, bottom), gain=4.0)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated "same" convolution (padding k // 2), optionally upsampling 2× first.

    x: (N, I, H, W), weight (O, I, k, k), styles (N, I) → (N, O, H·up, W·up). Memory layout: oneDNN's
    kernels for the upsampling and 3×3 convolutions (and the depthwise filters after them) are
    several times faster in channels-last, so those run in it; large 3×3 convolutions at inference
    go through NNPACK instead (`ip2n.ops.fast_conv`), which works in NCHW; a 1×1 convolution keeps
    its input's layout (converting a 512² map costs ten times the convolution). The values do not
    depend on the layout. A batch of
    one folds the styles into the kernel (cheaper than scaling the activations: the kernel is far
    smaller than a 512² map); larger batches scale the activations instead, so that all samples
    share one kernel and one batched convolution. `resample_filter` (fh, fw) is required for
    up = 2. Noise, bias and activation are the caller's business.
    """
    if up not in (1, 2):
        raise ValueError(f"only up = 1 or 2 is supported, got {up}")
    if up == 2 and resample_filter is None:
        raise ValueError("upsampling needs a resample_filter")
    # Only the layout is chosen here; `conv2d_same` decides again on the operands it really gets (the
    # modulated kernel also needs gradients when the styles do, which `weight` alone does not show).
    if up == 2 or (weight.shape[-1] > 1 and not uses_nnpack(x, weight)):
        x = x.contiguous(memory_format=torch.channels_last)
    batch = x.shape[0]
    padding = weight.shape[-1] // 2
    coefficients = demodulation_coefficients(weight, styles) if demodulate else None  # (N, O)
    if batch == 1:
        scale = styles.to(weight.dtype)[0, None, :]  # (1, I)
        if coefficients is not None:
            scale = coefficients[0, :, None] * scale  # (O, I)
        return _conv(x, (weight * scale[:, :, None, None]).to(x.dtype), up, padding, resample_filter)

    x = _conv(x * styles.to(x.dtype)[:, :, None, None], weight.to(x.dtype), up, padding, resample_filter)
    if coefficients is not None:
        x = x.mul_(coefficients.to(x.dtype)[:, :, None, None])
    return x


def _conv(
    x: torch.Tensor, w: torch.Tensor, up: int, padding: int, resample_filter: torch.Tensor | None
) -> torch.Tensor:
    if up == 1:
        return conv2d_same(x, w, padding)
    assert resample_filter is not None  # modulated_conv2d requires it for up = 2
    return upsample_conv2d(x, w, resample_filter, padding=padding)
