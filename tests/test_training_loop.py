"""The training loop: learning, exact resume, crash-safe checkpoints, DDP equivalence, EMA export, CLI."""

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.training_data import write_triplets
from ip2n.checkpoints.editing_weights import load_dit
from ip2n.diffusion import make_schedule
from ip2n.training import checkpoint as checkpoint_module
from ip2n.training.checkpoint import load_checkpoint
from ip2n.training.config import TrainingConfig, load_config
from ip2n.training.distributed import DistributedContext
from ip2n.training.loop import make_batch, prepare_data, train
from ip2n.training.models import build_frozen_networks
from ip2n.training.objective import batch_losses, draw

REPO = Path(__file__).resolve().parents[1]


def tiny_config(root: Path, **sections) -> TrainingConfig:
    config = load_config(REPO / "configs" / "tiny.yaml").replace(
        data={"root": str(root)},
        logging={"progress_bar": False, "log_every": 1, "checkpoint_every": 2, "sample_every": 0},
        objective={"identity_weight": 0.0},
    )
    return config.replace(**sections)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_triplets(
        tmp_path_factory.mktemp("triplets"),
        {
            "p0": "make her smile\nadd glasses",
            "p1": "turn the hair blond",
            "p2": "make him older\nadd a beard",
        },
    )


def states_equal(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_training_reduces_the_loss_on_a_tiny_overfit_set(tmp_path):
    root = write_triplets(tmp_path / "data", {"only": "make her smile"})
    config = tiny_config(
        root,
        optimization={"steps": 150, "batch_size": 8, "learning_rate": 3e-3},
        logging={"checkpoint_every": 1000, "log_every": 10},
        objective={"condition_dropout": False},
    )
    networks = build_frozen_networks(config.model, torch.device("cpu"))
    dataset, encodings, _ = prepare_data(config, networks, DistributedContext())
    batch = make_batch(dataset, encodings, [0] * 16, torch.device("cpu"))
    draws = draw(16, (512, 4, 4), 1000, torch.Generator().manual_seed(123))  # fixed evaluation draws

    def evaluation_loss(model) -> float:
        with torch.no_grad():
            return float(
                batch_losses(
                    model, batch, draws, networks, make_schedule(), config.objective, training=False
                )["loss"].mean()
            )

    result = train(config, tmp_path / "run")
    trained = load_dit(result.ema_weights)
    state = load_checkpoint(result.checkpoint)
    from ip2n.training.models import build_dit

    initial = build_dit(config.model, torch.device("cpu"))
    model = build_dit(config.model, torch.device("cpu"))
    model.load_state_dict(state.model)
    before, after = evaluation_loss(initial), evaluation_loss(model)
    assert after < 0.95 * before, (before, after)  # deterministic: fixed data, draws and init
    assert evaluation_loss(trained) < before  # the EMA follows
    assert (tmp_path / "run" / "loss.png").is_file() and "step 150" in (
        tmp_path / "run" / "train.log"
    ).read_text()


def test_resume_continues_exactly(tmp_path, data_root):
    config = tiny_config(
        data_root,
        optimization={"steps": 4, "batch_size": 2},
        objective={"identity_weight": 0.1, "render_resolution": 16},
    )
    full = train(config, tmp_path / "full")
    train(config, tmp_path / "split", stop_after=2)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt").step == 2
    resumed = train(config, tmp_path / "split", resume=True)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a.step == b.step == 4
    assert states_equal(a.model, b.model) and states_equal(a.ema, b.ema)
    assert torch.equal(a.rng_state, b.rng_state) and a.loss_history == b.loss_history
    assert states_equal(a.optimizer["state"][0], b.optimizer["state"][0])


def test_a_crash_while_writing_a_checkpoint_keeps_the_last_good_one(tmp_path, data_root, monkeypatch):
    config = tiny_config(data_root, optimization={"steps": 4, "batch_size": 2})
    real_save = torch.save

    def dying_save(obj, path, *args, **kwargs):
        if obj["step"] == 4:
            Path(path).write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt("killed while writing")
        real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir() if "partial" in p.name] == []
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt").step == 2  # the last good one, intact

    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    resumed = train(config, tmp_path / "run", resume=True)
    uninterrupted = train(config, tmp_path / "clean")
    assert states_equal(
        load_checkpoint(resumed.checkpoint).ema, load_checkpoint(uninterrupted.checkpoint).ema
    )


def test_resume_refuses_a_different_config(tmp_path, data_root):
    config = tiny_config(data_root, optimization={"steps": 1, "batch_size": 2})
    train(config, tmp_path / "run")
    with pytest.raises(ValueError, match="different config"):
        train(config.replace(optimization={"learning_rate": 0.5}), tmp_path / "run", resume=True)


def test_learning_rate_decays_linearly_to_zero_over_the_last_steps(tmp_path, data_root, monkeypatch):
    from ip2n.training.config import OptimizationConfig

    schedule = OptimizationConfig(steps=10, learning_rate=1e-3, lr_decay_steps=4)
    assert [schedule.learning_rate_at(step) for step in range(10)] == pytest.approx(
        [1e-3] * 6 + [1e-3, 7.5e-4, 5e-4, 2.5e-4]
    )
    assert OptimizationConfig(steps=3, learning_rate=1e-3).learning_rate_at(2) == 1e-3  # default: constant
    with pytest.raises(ValueError, match="lr_decay_steps must be between 0 and steps"):
        OptimizationConfig(steps=3, lr_decay_steps=4)

    # the loop applies it: the learning rate each AdamW step used
    used = []
    real_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    config = tiny_config(
        data_root, optimization={"steps": 4, "batch_size": 2, "learning_rate": 1e-3, "lr_decay_steps": 2}
    )
    train(config, tmp_path / "run", stop_after=2)
    # a resumed run may extend the budget and its decay (fine-tuning with a decaying rate)
    train(config.replace(optimization={"steps": 6, "lr_decay_steps": 4}), tmp_path / "run", resume=True)
    assert used == pytest.approx([1e-3, 1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_ema_export_loads_in_the_edit_pipeline(tmp_path, data_root):
    config = tiny_config(data_root, optimization={"steps": 2, "batch_size": 2})
    result = train(config, tmp_path / "run")
    dit = load_dit(result.ema_weights)
    assert dit.config == config.model.dit_config()
    assert states_equal(dit.state_dict(), load_checkpoint(result.checkpoint).ema)
    assert load_dit(tmp_path / "run").config == dit.config  # found by name in the output folder too


def test_cli_train_writes_the_outputs(tmp_path, data_root, capsys):
    from ip2n.cli import main

    config_path = tmp_path / "tiny.json"
    config_path.write_text(
        __import__("json").dumps(tiny_config(data_root, optimization={"steps": 1, "batch_size": 2}).to_dict())
    )
    assert (
        main(["train", "--config", str(config_path), "--out", str(tmp_path / "run"), "--threads", "1"]) == 0
    )
    assert capsys.readouterr().out.strip().endswith("dit.safetensors")
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x")]) == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, config: dict, out: str) -> None:
    import os

    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        train(
            TrainingConfig.from_dict(config),
            out,
            context=DistributedContext(rank, world_size, torch.device("cpu")),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two training processes: 25 s of the default tier
@pytest.mark.timeout(180)
def test_two_gloo_processes_match_one_process(tmp_path, data_root):
    import torch.multiprocessing as mp

    config = tiny_config(
        data_root,
        optimization={"steps": 3, "batch_size": 4},
        objective={"identity_weight": 0.1, "render_resolution": 16},
    )
    single = train(config, tmp_path / "single")
    mp.spawn(
        _ddp_worker, args=(2, _free_port(), config.to_dict(), str(tmp_path / "ddp")), nprocs=2, join=True
    )
    a, b = load_checkpoint(single.checkpoint), load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert a.step == b.step == 3
    assert states_equal(a.model, b.model, atol=1e-5) and states_equal(a.ema, b.ema, atol=1e-5)
    assert max(abs(x[1] - y[1]) for x, y in zip(a.loss_history, b.loss_history)) < 1e-5


def test_training_on_the_sharded_cache_matches_the_in_memory_run(tmp_path, data_root):
    config = tiny_config(data_root, optimization={"steps": 3, "batch_size": 2})
    in_memory = load_checkpoint(train(config, tmp_path / "memory").checkpoint)
    cache = tmp_path / "cache" / "encodings.safetensors"
    sharded_config = config.replace(data={"cache": str(cache), "cache_shard_pairs": 2})
    sharded = load_checkpoint(train(sharded_config, tmp_path / "sharded").checkpoint)
    assert len(list(cache.parent.glob("encodings-*.safetensors"))) == 2  # 3 pairs in shards of 2
    # Shards are encoded in other batches than the in-memory run: equal up to float summation order.
    assert states_equal(in_memory.model, sharded.model, atol=1e-5)
    assert max(abs(a[1] - b[1]) for a, b in zip(in_memory.loss_history, sharded.loss_history)) < 1e-5
    again = load_checkpoint(train(sharded_config, tmp_path / "again").checkpoint)  # reads the shards
    assert states_equal(sharded.ema, again.ema)


def test_sample_grids_are_written_with_the_right_size(tmp_path, data_root):
    from PIL import Image

    from ip2n.training.samples import CAPTION_HEIGHT, PADDING

    config = tiny_config(
        data_root,
        optimization={"steps": 3, "batch_size": 2},
        logging={"sample_every": 2, "sample_pairs": 2, "sample_resolution": 16},
    )
    train(config, tmp_path / "run")
    grids = sorted(path.name for path in (tmp_path / "run" / "samples").iterdir())
    assert grids == ["step_000002.png", "step_000003.png"]  # every 2 steps, and at the end
    side = build_frozen_networks(config.model, torch.device("cpu")).generator.config.img_resolution
    with Image.open(tmp_path / "run" / "samples" / "step_000003.png") as grid:
        assert grid.size == (3 * side + 2 * PADDING, 2 * (side + CAPTION_HEIGHT) + PADDING)
        pixels = torch.from_numpy(np.asarray(grid.convert("L"), dtype=np.float32))
    assert pixels.std() > 1.0  # renders, not a blank canvas


def test_bf16_autocast_trains(tmp_path, data_root):
    config = tiny_config(data_root, optimization={"steps": 2, "batch_size": 2, "mixed_precision": "bf16"})
    result = train(config, tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in result.loss_history)
    assert all(value.dtype == torch.float32 for value in load_checkpoint(result.checkpoint).model.values())
