"""ip2n: instruction-guided 3D portrait editing (InstructPix2NeRF).

`from ip2n import EditPipeline` is the diffusers-style entry point (`EditPipeline.from_pretrained`).
Importing `ip2n` itself stays light: the pipeline (and torch) are imported on first use of these names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The models that ship with ip2n register themselves (`ip2n.registry`); no torch is imported here.
from ip2n import builtin  # noqa: E402, F401
from ip2n.version import __version__

if TYPE_CHECKING:
    from ip2n.pipeline.edit import EditPipeline, EditPipelineOutput
    from ip2n.pipeline.result import EditResult

# Public names → the module that defines them, imported when first asked for.
_LAZY = {
    "EditPipeline": "ip2n.pipeline.edit",
    "EditPipelineOutput": "ip2n.pipeline.edit",
    "EditResult": "ip2n.pipeline.result",
}

__all__ = ["EditPipeline", "EditPipelineOutput", "EditResult", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'ip2n' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
