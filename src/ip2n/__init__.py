"""ip2n: instruction-guided 3D portrait editing (InstructPix2NeRF)."""

__version__ = "0.2.0"
