"""Plain-PyTorch versions of the StyleGAN2/EG3D custom ops (FIR resampling, bias_act, modulated conv)."""

from ip2n.ops.bias_act import bias_act
from ip2n.ops.filtering import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from ip2n.ops.modulated_conv import demodulation_coefficients, modulated_conv2d, upsample_conv2d

__all__ = [
    "bias_act",
    "demodulation_coefficients",
    "downsample2d",
    "filter2d",
    "modulated_conv2d",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
    "upsample_conv2d",
]
