"""The interface every editor of the factory implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ip2n.factory.spec import Candidate, PairState


@runtime_checkable
class Editor(Protocol):
    """A 2-D (or exact) editor.

    `edit(state)` receives a prepared pair — `state.source_image` uint8 (H, W, 3), `state.camera`,
    `state.source_meta`, `state.edit` and the pair's seeds in `state.job.seeds` — and returns one
    `Candidate` per seed it tried, each with its uint8 (H, W, 3) image of the source's size (None
    when the output held NaN or infinity). It must be deterministic given those inputs, and must not
    write files. `describe()` says what the editor is (name and settings) for the manifest.
    """

    name: str

    def describe(self) -> dict[str, Any]: ...

    def edit(self, state: PairState) -> list[Candidate]: ...
