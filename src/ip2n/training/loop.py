"""The training loop: data → objective → AdamW step → EMA, with checkpoints, logs, a loss curve and
sample grids.

Determinism: the data order of epoch e is a permutation drawn from (seed, e), and every other random
choice of a step is drawn, for the whole global batch, from one training generator whose state the
checkpoint keeps. A resumed run therefore repeats exactly what the uninterrupted run would have
done, and a DDP process computes the loss of its slice of the very batch a single process would see.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ip2n.diffusion import make_schedule
from ip2n.export.images import save_image
from ip2n.text import tokenize
from ip2n.training.checkpoint import (
    CHECKPOINT_NAME,
    TrainingState,
    export_ema,
    load_checkpoint,
    save_checkpoint,
)
from ip2n.training.config import TrainingConfig
from ip2n.training.data import DataReport, TripletDataset, read_triplets
from ip2n.training.distributed import DistributedContext
from ip2n.training.encoding import (
    PairEncodings,
    encode_pairs,
    load_encodings,
    network_fingerprint,
    save_encodings,
)
from ip2n.training.models import FrozenNetworks, build_dit, build_frozen_networks
from ip2n.training.objective import Batch, batch_losses, draw
from ip2n.training.plots import write_loss_curve
from ip2n.training.samples import SampleSet, choose_samples, sample_grid
from ip2n.training.sharded_cache import ShardedEncodings, load_sharded_encodings, write_sharded_encodings

logger = logging.getLogger(__name__)

LOG_NAME = "train.log"
LOSS_CURVE_NAME = "loss.png"
SAMPLES_DIR = "samples"  # samples/step_000100.png, … (source | target | edited per row)
EMA_EXPORT_NAME = "dit"  # → dit.safetensors + dit.json, the converted-DiT names load_dit looks for


@dataclass(frozen=True)
class TrainingResult:
    step: int
    loss_history: list[tuple[int, float]]
    checkpoint: Path
    ema_weights: Path


class BatchSampler:
    """Global batch of sample indices for any step: epoch after epoch of seeded permutations."""

    def __init__(self, num_samples: int, batch_size: int, seed: int):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self._permutations: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._permutations:
            self._permutations = {
                epoch: torch.randperm(
                    self.num_samples, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                )
            }
        return self._permutations[epoch]

    def indices(self, step: int) -> list[int]:
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        return [int(self._permutation(p // self.num_samples)[p % self.num_samples]) for p in positions]


def prepare_data(
    config: TrainingConfig, networks: FrozenNetworks, context: DistributedContext
) -> tuple[TripletDataset, PairEncodings | ShardedEncodings, DataReport]:
    """Scan the triplets and encode them (or read the cache; only the main process writes it)."""
    dataset, report = read_triplets(config.data.root)
    fingerprint = network_fingerprint(config.to_dict()["model"])
    encodings: PairEncodings | ShardedEncodings
    if config.data.cache_shard_pairs is not None:
        keep, encodings = _sharded_data(config, dataset, networks, report, fingerprint, context)
    else:
        keep, encodings = _in_memory_data(config, dataset, networks, report, fingerprint, context)
    dataset = dataset.keep_pairs(keep)
    logger.info(
        "training data: %d pairs, %d samples; skipped: %s", len(dataset.pairs), len(dataset), report.summary()
    )
    return dataset, encodings, report


def _in_memory_data(
    config: TrainingConfig,
    dataset: TripletDataset,
    networks: FrozenNetworks,
    report: DataReport,
    fingerprint: dict,
    context: DistributedContext,
) -> tuple[list[bool], PairEncodings]:
    cached = load_encodings(config.data.cache, dataset, fingerprint) if config.data.cache else None
    if cached is None and config.data.cache and context.enabled:
        # One process encodes and writes the cache; the others wait and read it.
        if context.is_main:
            keep, encodings = encode_pairs(dataset, networks, report, config.data.encode_batch_size)
            save_encodings(config.data.cache, dataset, keep, encodings, fingerprint)
        context.barrier()
        cached = load_encodings(config.data.cache, dataset, fingerprint)
    if cached is not None:
        return cached
    keep, encodings = encode_pairs(dataset, networks, report, config.data.encode_batch_size)
    if config.data.cache and context.is_main:
        save_encodings(config.data.cache, dataset, keep, encodings, fingerprint)
    return keep, encodings


def _sharded_data(
    config: TrainingConfig,
    dataset: TripletDataset,
    networks: FrozenNetworks,
    report: DataReport,
    fingerprint: dict,
    context: DistributedContext,
) -> tuple[list[bool], ShardedEncodings]:
    cache, shard_pairs = config.data.cache, config.data.cache_shard_pairs
    # DataConfig refuses cache_shard_pairs without a cache; this runs only when shards are configured.
    assert cache is not None and shard_pairs is not None
    cached = load_sharded_encodings(cache, dataset, fingerprint)
    if cached is None:
        # Shards are only ever read from disk: the main process writes them, everyone maps them.
        if context.is_main:
            write_sharded_encodings(
                cache,
                dataset,
                networks,
                report,
                fingerprint,
                shard_pairs,
                config.data.encode_batch_size,
            )
        context.barrier()
        cached = load_sharded_encodings(cache, dataset, fingerprint)
        if cached is None:
            raise RuntimeError(f"the sharded encoding cache {cache} was written but cannot be read back")
    return cached


def make_batch(
    dataset: TripletDataset,
    encodings: PairEncodings | ShardedEncodings,
    indices: list[int],
    device: torch.device,
) -> Batch:
    samples = [dataset.samples[i] for i in indices]
    pairs = torch.tensor([sample.pair_index for sample in samples], dtype=torch.int64)
    rows = encodings.rows(pairs)
    return Batch(
        source_latent=rows.source_latent.to(device),
        edited_latent=rows.edited_latent.to(device),
        source_identity=rows.source_identity.to(device),
        edited_identity=rows.edited_identity.to(device),
        tokens=tokenize([sample.instruction for sample in samples]).to(device),
    )


class TrainingData(Protocol):
    """What the loop reads its data from: `EncodedTriplets` or another source with the same four members."""

    def __len__(self) -> int: ...

    @property
    def latent_shape(self) -> tuple[int, ...]: ...

    def batch(self, indices: list[int], device: torch.device) -> Batch: ...

    def sample_set(self, count: int, seed: int, device: torch.device) -> SampleSet: ...


class EncodedTriplets:
    """Training data read from disk: triplets and their encodings (what `prepare_data` returns).

    The loop needs only `len`, `latent_shape`, `batch(indices, device)` and `sample_set(count, seed,
    device)`; other data sources (the synthetic world's latent triplets) provide the same four.
    """

    def __init__(self, dataset: TripletDataset, encodings: PairEncodings | ShardedEncodings) -> None:
        self.dataset, self.encodings = dataset, encodings

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.encodings.latent_shape

    def batch(self, indices: list[int], device: torch.device) -> Batch:
        return make_batch(self.dataset, self.encodings, indices, device)

    def sample_set(self, count: int, seed: int, device: torch.device) -> SampleSet:
        return choose_samples(self.dataset, self.encodings, count, seed, device)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay · ema + (1 − decay) · model, over all parameters (as the official script)."""
    for ema_parameter, parameter in zip(ema.parameters(), model.parameters(), strict=True):
        ema_parameter.mul_(decay).add_(parameter.detach(), alpha=1.0 - decay)


def _check_resumable(saved: dict, current: TrainingConfig) -> None:
    """A run may be resumed with a different step budget, learning-rate decay or logging, nothing else."""
    ignored = {"logging"}
    schedule = {"steps": None, "lr_decay_steps": None}  # checkpoints from before lr_decay_steps lack the key
    saved_core = {k: v for k, v in saved.items() if k not in ignored}
    current_core = {k: v for k, v in current.to_dict().items() if k not in ignored}
    saved_core["optimization"] = {**saved_core["optimization"], **schedule}
    current_core["optimization"] = {**current_core["optimization"], **schedule}
    if saved_core != current_core:
        changed = sorted(k for k in current_core if saved_core.get(k) != current_core[k])
        raise ValueError(
            f"the checkpoint was made with a different config (sections: {', '.join(changed)}); "
            "resume with the config it was made with, or start a new output folder"
        )


class _RunLog:
    """The run's log file (main process) for the duration of training."""

    def __init__(self, path: Path | None):
        self.path = path
        self.handler: logging.Handler | None = None
        self.package_logger = logging.getLogger("ip2n")
        self.previous_level = self.package_logger.level

    def __enter__(self) -> _RunLog:
        if self.path is not None:
            self.handler = logging.FileHandler(self.path, encoding="utf-8")
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            self.package_logger.addHandler(self.handler)
            if self.package_logger.getEffectiveLevel() > logging.INFO:
                self.package_logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.handler is not None:
            self.package_logger.removeHandler(self.handler)
            self.handler.close()
            self.package_logger.setLevel(self.previous_level)


def train(
    config: TrainingConfig,
    output_dir: str | os.PathLike,
    *,
    resume: bool = False,
    context: DistributedContext | None = None,
    stop_after: int | None = None,
    data: TrainingData | None = None,
) -> TrainingResult:
    """Train the DiT as `config` says, writing checkpoint, log, loss curve, sample grids and EMA export
    to `output_dir`.

    `resume` continues from `output_dir/checkpoint.pt`. `stop_after` ends this invocation (with a
    checkpoint) after that many more steps, e.g. to fit a cluster job's time limit; run again with
    `resume` to continue. In a DDP run every process calls this with the same arguments. `data`
    replaces the triplets of `config.data` (any object with the interface of `EncodedTriplets`).
    """
    context = context or DistributedContext()
    output_dir = Path(output_dir)
    if not resume:
        _refuse_existing_run(output_dir)
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    context.barrier()
    with _RunLog(output_dir / LOG_NAME if context.is_main else None):
        return _train(config, output_dir, resume, context, stop_after, data)


def _refuse_existing_run(output_dir: Path) -> None:
    """A new run must not overwrite another run's checkpoint and weights."""
    for name in (CHECKPOINT_NAME, f"{EMA_EXPORT_NAME}.safetensors"):
        if (output_dir / name).exists():
            raise ValueError(
                f"{output_dir} already holds a training run ({name}); continue it with --resume "
                "(resume=True), or choose another output folder for a new run"
            )


def _train(
    config: TrainingConfig,
    output_dir: Path,
    resume: bool,
    context: DistributedContext,
    stop_after: int | None,
    data: TrainingData | None,
) -> TrainingResult:
    optimization = config.optimization
    if optimization.batch_size % context.world_size:
        raise ValueError(
            f"the global batch {optimization.batch_size} must be divisible by the "
            f"{context.world_size} processes"
        )
    local_size = optimization.batch_size // context.world_size
    local_rows = slice(context.rank * local_size, (context.rank + 1) * local_size)
    device = context.device
    checkpoint_path = output_dir / CHECKPOINT_NAME
    # A checkpoint that cannot be read or does not fit the config fails the run now, not after the
    # networks are built and the data encoded.
    state = load_checkpoint(checkpoint_path, device) if resume else None
    if state is not None:
        _check_resumable(state.config, config)

    networks = build_frozen_networks(config.model, device)
    if data is None:
        data = EncodedTriplets(*prepare_data(config, networks, context)[:2])
    schedule = make_schedule()
    model = build_dit(config.model, device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=optimization.learning_rate, weight_decay=optimization.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    step, history = 0, []
    if state is not None:
        model.load_state_dict(state.model)
        ema.load_state_dict(state.ema)
        optimizer.load_state_dict(state.optimizer)
        generator.set_state(state.rng_state)
        step, history = state.step, list(state.loss_history)
        logger.info("resumed from %s at step %d", checkpoint_path, step)
        state = None  # copied into the model and the optimizer
    network = (
        DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if context.enabled
        else model
    )
    model.train()
    sampler = BatchSampler(len(data), optimization.batch_size, config.seed)
    autocast_dtype = torch.bfloat16 if optimization.mixed_precision == "bf16" else None
    last_step = optimization.steps if stop_after is None else min(optimization.steps, step + stop_after)

    def checkpoint() -> None:
        if context.is_main:
            save_checkpoint(
                checkpoint_path,
                TrainingState(
                    step,
                    model.state_dict(),
                    ema.state_dict(),
                    optimizer.state_dict(),
                    generator.get_state(),
                    config.to_dict(),
                    history,
                ),
            )
            write_loss_curve(output_dir / LOSS_CURVE_NAME, history)
        context.barrier()

    logging_config = config.logging
    samples = (
        data.sample_set(logging_config.sample_pairs, config.seed, device)
        if context.is_main and logging_config.sample_every
        else None
    )

    def write_samples() -> None:
        if samples is not None:
            grid = sample_grid(
                ema, samples, networks, logging_config.sample_steps, logging_config.sample_resolution
            )
            save_image(grid, output_dir / SAMPLES_DIR / f"step_{step:06d}.png")

    progress = tqdm(
        total=optimization.steps,
        initial=step,
        disable=not (context.is_main and config.logging.progress_bar),
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    window_losses: list[float] = []
    window_start = time.perf_counter()
    while step < last_step:
        indices = sampler.indices(step)[local_rows]
        draws = draw(optimization.batch_size, data.latent_shape, schedule.num_steps, generator)
        terms = batch_losses(
            network,
            data.batch(indices, device),
            draws.rows(local_rows),
            networks,
            schedule,
            config.objective,
            autocast_dtype=autocast_dtype,
        )
        loss = terms["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = optimization.learning_rate_at(step)
        if optimization.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, optimization.max_grad_norm)
        optimizer.step()
        update_ema(ema, model, optimization.ema_decay)
        step += 1

        window_losses.append(float(context.mean(loss.detach())))
        progress.update(1)
        if step % config.logging.log_every == 0 or step == last_step:
            mean_loss = sum(window_losses) / len(window_losses)
            rate = len(window_losses) / max(time.perf_counter() - window_start, 1e-9)
            history.append((step, mean_loss))
            progress.set_postfix(loss=f"{mean_loss:.4f}", steps_per_s=f"{rate:.2f}")
            logger.info("step %d: loss %.5f (%.2f steps/s)", step, mean_loss, rate)
            window_losses, window_start = [], time.perf_counter()
        if step % config.logging.checkpoint_every == 0 and step != last_step:
            checkpoint()
        if logging_config.sample_every and step % logging_config.sample_every == 0 and step != last_step:
            write_samples()
    progress.close()
    checkpoint()
    if logging_config.sample_every:
        write_samples()
    ema_path = output_dir / f"{EMA_EXPORT_NAME}.safetensors"
    if context.is_main:
        ema_path = export_ema(output_dir / EMA_EXPORT_NAME, ema.state_dict(), model.config, step)
    context.barrier()
    return TrainingResult(step=step, loss_history=history, checkpoint=checkpoint_path, ema_weights=ema_path)
