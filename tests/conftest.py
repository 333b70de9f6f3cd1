"""Shared test fixtures: the reference data that ships with the tests; one thread per test worker."""

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # The default tier runs in parallel workers (pyproject.toml's addopts): one thread each keeps them
    # from fighting over the cores; processes the tests start inherit the setting.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """`tests/fixtures`: reference vectors produced by the official code (see its README.md)."""
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def portrait_paths(fixtures_dir) -> list[Path]:
    """The 20 already-aligned 512² portraits of `tests/fixtures/portraits`."""
    paths = sorted((fixtures_dir / "portraits").glob("*.jpg"))
    assert len(paths) == 20, f"expected the 20 portraits in {fixtures_dir / 'portraits'}"
    return paths
