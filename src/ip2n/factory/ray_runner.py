"""The factory's stages as a Ray Data pipeline: prepare → edit → judge, each a pool of actors.

Rows carry one pair each (its `Job`, then its `PairState`, pickled); each actor builds its networks
once (`Stages`, shipped to it by Ray) and works on one pair at a time. Results stream back to the
calling process, which alone writes files and the manifest, so a killed run loses only the pairs in
flight. A pair's outcome depends only on its own seeds, so the accepted set equals the one-process
run's. Actors run torch on one thread each (`num_cpus` per actor: edit 1, prepare and judge ½), so
the edit pool should be about as large as the cores left.

`address` "local" starts a local Ray (all cores, no dashboard) and shuts it down at the end; any
other value is passed to `ray.init(address=...)` (an existing cluster, whose workers must have
ip2n installed). A Ray already initialised in this process is used as it is.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ip2n.factory.spec import Job, PairState

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'instructpix2nerf[factory]'"


class _Stage:
    """A Ray Data callable class: one `Stages` method over a batch of pickled rows."""

    method = ""
    column_in = "state"

    def __init__(self, stages: Any) -> None:
        import torch

        torch.set_num_threads(1)
        self.stages = stages

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        step = getattr(self.stages, self.method)
        results = [pickle.dumps(step(pickle.loads(item))) for item in batch[self.column_in]]
        return {"state": np.array(results, dtype=object)}


class PrepareStage(_Stage):
    method = "prepare"
    column_in = "job"


class EditStage(_Stage):
    method = "edit"


class JudgeStage(_Stage):
    method = "judge"


def run_on_ray(
    jobs: Sequence[Job],
    stages: Any,
    address: str,
    edit_actors: int | None = None,
    progress: bool = True,
) -> Iterator[PairState]:
    """The pairs' final states, in pair order, computed on Ray."""
    try:
        import ray
        from ray.data import ActorPoolStrategy, DataContext
    except ImportError:
        raise ImportError(f"--ray needs Ray: {INSTALL_HINT}") from None
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if address == "local":
            ray.init(num_cpus=os.cpu_count() or 1, **options)
        else:
            ray.init(address=address, **options)
        started = True
    try:
        context = DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = progress
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = 1 if str(stages.settings.device).startswith("cuda") else 0
        edit_pool = edit_actors or max(1, cpus - 1)
        dataset: Any = ray.data.from_items(
            [{"job": pickle.dumps(job)} for job in jobs], override_num_blocks=max(1, min(len(jobs), 1000))
        )
        common: dict[str, Any] = {"batch_size": 1, "batch_format": "numpy", "fn_constructor_args": (stages,)}
        dataset = dataset.map_batches(PrepareStage, compute=ActorPoolStrategy(size=1), num_cpus=0.5, **common)
        dataset = dataset.map_batches(
            EditStage, compute=ActorPoolStrategy(size=edit_pool), num_cpus=1, num_gpus=gpus, **common
        )
        dataset = dataset.map_batches(JudgeStage, compute=ActorPoolStrategy(size=1), num_cpus=0.5, **common)
        for row in dataset.iter_rows():
            yield pickle.loads(row["state"])
    finally:
        if started:
            ray.shutdown()
