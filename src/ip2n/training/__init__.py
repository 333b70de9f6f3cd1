"""Training of the conditional DiT on (source, edited, instruction) triplets. See docs/training.md.

config → data (triplet layout) → encoding (frozen networks, once; sharded_cache for data sets larger
than memory) → objective (the training loss: epsilon MSE + learned-variance bound, condition
dropout, TPR, identity loss; docs/method.md) → loop (AdamW, EMA, checkpoints, samples: grids),
optionally data-parallel over torch.distributed (distributed).
"""

from ip2n.training.checkpoint import TrainingState, export_ema, load_checkpoint, save_checkpoint
from ip2n.training.config import TrainingConfig, load_config
from ip2n.training.data import DataReport, TripletDataset, read_triplets
from ip2n.training.distributed import DistributedContext, init_distributed, shutdown_distributed
from ip2n.training.loop import TrainingResult, train
from ip2n.training.objective import Batch, Draws, batch_losses, draw

__all__ = [
    "Batch",
    "DataReport",
    "DistributedContext",
    "Draws",
    "TrainingConfig",
    "TrainingResult",
    "TrainingState",
    "TripletDataset",
    "batch_losses",
    "draw",
    "export_ema",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "read_triplets",
    "save_checkpoint",
    "shutdown_distributed",
    "train",
]
