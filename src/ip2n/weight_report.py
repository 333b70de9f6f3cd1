"""Compare a state dict with the keys and shapes a model expects (`ip2n weights check`).

Works on anything with a `.shape` (tensors, meta tensors, numpy arrays), so a checkpoint can be
checked without building the model or materialising its weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]


@dataclass(frozen=True)
class WeightReport:
    """Differences between a state dict and the expected layout, each list in the expected key order."""

    num_expected: int
    missing: tuple[tuple[str, Shape], ...]  # (key, expected shape)
    unexpected: tuple[tuple[str, Shape], ...]  # (key, found shape)
    mismatched: tuple[tuple[str, Shape, Shape], ...]  # (key, expected shape, found shape)
    missing_optional: tuple[str, ...] = ()  # absent but tolerated (e.g. old BatchNorm counters)

    @property
    def complete(self) -> bool:
        """True when every required key is present with the expected shape (extra keys allowed)."""
        return not (self.missing or self.mismatched)

    @property
    def ok(self) -> bool:
        """True when every required key is present with the expected shape and nothing is extra."""
        return self.complete and not self.unexpected

    def summary(self, max_lines: int = 20) -> str:
        """Human-readable report: a headline, then one line per problem (at most `max_lines`)."""
        if self.ok:
            headline = f"OK: all {self.num_expected} expected tensors present with the expected shapes"
            if self.missing_optional:
                headline += f" ({len(self.missing_optional)} optional entries absent, which is fine)"
            return headline
        counts = [
            f"{len(items)} {label}"
            for items, label in (
                (self.missing, "missing"),
                (self.unexpected, "unexpected"),
                (self.mismatched, "with a wrong shape"),
            )
            if items
        ]
        lines = [
            f"{len(self.missing) + len(self.unexpected) + len(self.mismatched)} problems: {', '.join(counts)}"
        ]
        problems = (
            [f"missing: {key} (expected {_fmt(shape)})" for key, shape in self.missing]
            + [f"unexpected: {key} {_fmt(shape)}" for key, shape in self.unexpected]
            + [
                f"shape mismatch: {key}: expected {_fmt(want)}, found {_fmt(got)}"
                for key, want, got in self.mismatched
            ]
        )
        lines += problems[:max_lines]
        if len(problems) > max_lines:
            lines.append(f"... and {len(problems) - max_lines} more")
        return "\n".join(lines)


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join(str(size) for size in shape) + "]"


def check_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, Sequence[int]],
    optional_suffixes: Iterable[str] = (),
) -> WeightReport:
    """Compare `state_dict` (key → tensor-like) with `expected` (key → shape).

    Keys of `expected` ending with one of `optional_suffixes` may be absent without making the report
    fail (for example ".num_batches_tracked", which files saved by old PyTorch versions lack); if
    present, their shape is still checked.
    """
    suffixes = tuple(optional_suffixes)
    missing, missing_optional, mismatched = [], [], []
    for key, shape in expected.items():
        want = tuple(int(size) for size in shape)
        if key not in state_dict:
            if suffixes and key.endswith(suffixes):
                missing_optional.append(key)
            else:
                missing.append((key, want))
            continue
        got = tuple(state_dict[key].shape)
        if got != want:
            mismatched.append((key, want, got))
    unexpected = [(key, tuple(value.shape)) for key, value in state_dict.items() if key not in expected]
    return WeightReport(
        num_expected=len(expected),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        mismatched=tuple(mismatched),
        missing_optional=tuple(missing_optional),
    )


def shapes_from_manifest(entries: Mapping[str, Sequence[Any]]) -> dict[str, Shape]:
    """Key → shape from a fixtures manifest `state_dict` (key → [shape, dtype])."""
    return {key: tuple(shape) for key, (shape, _dtype) in entries.items()}
