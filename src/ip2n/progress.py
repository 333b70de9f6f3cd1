"""Progress bars for the stages of an edit that can take seconds on a CPU (tqdm, on stderr).

The library shows them only when asked (`progress=True`); the CLI asks. Each stage has its own
labelled bar — loading the models, encoding, the diffusion steps, the frontal renders, the views, the
orbit's frames, the mesh — so a slow stage is visibly running rather than a silent pause.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm


def stage_bar(
    description: str,
    total: int | None,
    enabled: bool,
    unit: str = "step",
    options: Mapping[str, Any] | None = None,
) -> tqdm:
    """A progress bar for one stage (disabled: does nothing); use as a context manager.

    `options`: further tqdm arguments that override these (`EditPipeline.set_progress_bar_config`).
    """
    # sys.stderr is looked up now, not at import, so that redirected or captured stderr is used.
    settings: dict[str, Any] = {
        "total": total,
        "desc": description,
        "unit": unit,
        "disable": not enabled,
        "file": sys.stderr,
        "leave": True,
        "mininterval": 0.2,
    }
    return tqdm(**{**settings, **(options or {})})


def check_bar_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` as a dict, after checking that tqdm takes every one of them (TypeError otherwise)."""
    # tqdm.auto's class may take (*args, **kwargs); the plain tqdm's signature lists the options.
    accepted = set(inspect.signature(std_tqdm.__init__).parameters) - {"self", "iterable", "gui", "kwargs"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(f"unknown progress bar option(s) {unknown}; tqdm takes {', '.join(sorted(accepted))}")
    return dict(options)
