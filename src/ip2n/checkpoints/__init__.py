"""Checkpoint I/O: safe readers for the official files and ip2n's safetensors + JSON format.

Official checkpoints are untrusted pickles; everything here reads them without running code from
them (see docs/checkpoints.md).
"""

from ip2n.checkpoints.official import (
    EG3DCheckpoint,
    describe_checkpoint,
    read_eg3d_generator,
    read_module_state,
    read_torch_checkpoint,
    select_dit_weights,
    split_prefix,
    to_plain_data,
)
from ip2n.checkpoints.safe_unpickle import CheckpointError, UnsafeCheckpointError, load_checkpoint
from ip2n.checkpoints.safetensors_io import load_weights, save_weights

__all__ = [
    "CheckpointError",
    "EG3DCheckpoint",
    "UnsafeCheckpointError",
    "describe_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_eg3d_generator",
    "read_module_state",
    "read_torch_checkpoint",
    "save_weights",
    "select_dit_weights",
    "split_prefix",
    "to_plain_data",
]
