"""The edit pipeline: portrait + instruction → source and edited W+ latents → views, video, mesh.

`EditPipeline` is the one editing entry point (CLI, web app, evaluation and benchmarks call it);
`EditResult` renders and saves its output; `inputs` checks images and instructions at the boundary.
"""

from ip2n.pipeline.edit import (
    DEFAULT_IMAGE_SCALE,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    DEFAULT_TEXT_SCALE,
    MODEL_PRESETS,
    DeviceError,
    EditPipeline,
    IncompatibleWeightsError,
    ModelPreset,
    PresetError,
    edit_codes,
    edit_schedule,
    resolve_device,
)
from ip2n.pipeline.inputs import (
    ImageInputError,
    InstructionError,
    check_instructions,
    combine_instructions,
    edit_prompts,
    load_image,
    prepare_image,
)
from ip2n.pipeline.result import EditResult, EditSettings, comparison_grid

__all__ = [
    "DEFAULT_IMAGE_SCALE",
    "DEFAULT_STEPS",
    "DEFAULT_STRENGTH",
    "DEFAULT_TEXT_SCALE",
    "MODEL_PRESETS",
    "ModelPreset",
    "DeviceError",
    "EditPipeline",
    "EditResult",
    "EditSettings",
    "ImageInputError",
    "IncompatibleWeightsError",
    "InstructionError",
    "PresetError",
    "check_instructions",
    "combine_instructions",
    "comparison_grid",
    "edit_codes",
    "edit_prompts",
    "edit_schedule",
    "load_image",
    "prepare_image",
    "resolve_device",
]
