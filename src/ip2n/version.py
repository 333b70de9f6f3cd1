"""The version of ip2n: its one source (pyproject.toml reads it; CHANGELOG.md says what changed)."""

__version__ = "0.3.0"
