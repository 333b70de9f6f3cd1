"""`ip2n bench train`: its presets are the configs' models, and it times real training steps."""

import dataclasses
import json
from pathlib import Path

import pytest

from ip2n.bench.train import PRESETS, time_training_steps
from ip2n.training.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["paper", "synthetic", "tiny"])
def test_bench_presets_are_the_config_models_with_random_weights(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    model, render_resolution = PRESETS[name]
    assert model == dataclasses.replace(config.model, weights_dir=None)
    assert render_resolution == config.objective.render_resolution


def test_training_steps_are_timed_with_and_without_the_identity_loss():
    on, off = time_training_steps("tiny", steps=1)
    assert (on.identity_loss, off.identity_loss) == (True, False)
    assert (
        on.seconds_per_step > 0
        and off.seconds_per_step > 0
        and on.steps_per_second == 1 / on.seconds_per_step
    )


def test_cli_bench_train_prints_a_table(tmp_path, capsys):
    from ip2n.cli import main

    out = tmp_path / "bench.json"
    assert (
        main(["bench", "train", "--preset", "tiny", "--steps", "1", "--threads", "1", "--json", str(out)])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["preset", "identity", "loss"] and lines[2].startswith("tiny")
    assert [row["identity_loss"] for row in json.loads(out.read_text())["rows"]] == [True, False]


def test_cli_bench_edit_refuses_a_negative_orbit_before_building_weights(capsys, monkeypatch):
    from ip2n.bench import edit
    from ip2n.cli import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark started despite a bad --frames")

    monkeypatch.setattr(edit, "run_edit_benchmark", must_not_run)
    with pytest.raises(SystemExit) as exit_info:  # refused while the command line is parsed
        main(["bench", "edit", "--frames", "-1"])
    assert exit_info.value.code == 2
    assert "--frames: must be a whole number from 0 to 720, got -1" in capsys.readouterr().err


def test_memory_readings_are_megabytes_of_this_process():
    """Peak ≥ current ≥ file-backed part, all in MB (10⁶ bytes): a 200 MB buffer shows up as about 200."""
    import sys

    import numpy as np

    from ip2n.bench.timing import current_rss_mb, file_backed_rss_mb, peak_rss_mb

    before = current_rss_mb()
    buffer = np.ones(200_000_000, dtype=np.uint8)  # touched, so resident
    grown = current_rss_mb() - before
    assert 180 < grown < 230, grown
    assert (
        peak_rss_mb() >= current_rss_mb() - 5
    )  # the peak is sampled by the kernel in KiB, the current in pages
    if sys.platform.startswith("linux"):
        mapped = file_backed_rss_mb()
        assert mapped is not None and 0 < mapped < current_rss_mb()
    del buffer
