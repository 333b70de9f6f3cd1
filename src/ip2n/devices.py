"""The device ip2n runs on when the caller names none: the local CUDA GPU if there is one, else the CPU.

One rule for every entry point that chooses by itself — `ip2n train` (`init_distributed`) and
`EditPipeline.from_pretrained` — so that training and editing land on the same device. Apple's MPS
is used only when asked for by name (`device="mps"`).
"""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """`cuda` when a CUDA GPU is usable, else `cpu` (a process of a multi-GPU run picks its index)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
