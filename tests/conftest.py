"""Shared test fixtures: the location of the official reference fixtures."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Path to `../shared/fixtures` (reference vectors produced by the official code)."""
    if not FIXTURES_DIR.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES_DIR}; clone the repo beside ../shared")
    return FIXTURES_DIR
