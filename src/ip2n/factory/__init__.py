"""The triplet data factory: (original, edited, instruction) triplets in the official layout.

InstructPix2NeRF trains on ~40 K image pairs made from FFHQ by two 2-D editors, each with 20–30
paraphrased instructions; that data was never released. `ip2n data make` (and `make_dataset`)
rebuilds such a data set from your own sources: photos (aligned and given EG3D camera labels by
`ip2n.align`) or heads of the synthetic world, edited by one of the editors in
`ip2n.factory.editors`, filtered (identity kept, edit visible, face still there, image not
degenerate) and written as `ip2n train` reads it, with a `manifest.jsonl` saying what happened to
every pair and a `report.md`. Usage and design: docs/data_factory.md.

    from ip2n.factory import FactorySettings, make_dataset
    result = make_dataset("data/world", FactorySettings(editor="world", world_heads=200, seed=0))

Importing this package imports neither Ray, diffusers nor transformers; the code that needs them
imports them when it runs.
"""

from __future__ import annotations

from typing import Any

from ip2n.factory.spec import Edit, FactorySettings

__all__ = ["Edit", "FactoryResult", "FactorySettings", "make_dataset"]


def __getattr__(name: str) -> Any:
    if name in ("FactoryResult", "make_dataset"):
        from ip2n.factory import run

        return getattr(run, name)
    raise AttributeError(f"module 'ip2n.factory' has no attribute {name!r}")
