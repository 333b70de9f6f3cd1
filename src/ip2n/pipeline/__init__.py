"""The edit pipeline: portrait + instruction → source and edited W+ latents → views, video, mesh.

`EditPipeline` is the one editing entry point (CLI, web app, evaluation and benchmarks call it;
`from_pretrained` / `pipe(image=..., prompt=...)` / `EditPipelineOutput` are its diffusers-style face);
`EditResult` renders and saves its output; `inputs` checks images and instructions at the boundary;
`scope` says what a model of the synthetic world (the built-in model) can edit: its refusals are
`NotAWorldHeadError` and `UnknownInstructionError`, both `OutsideWorldError`s.
"""

from ip2n.defaults import DEFAULT_IMAGE_SCALE, DEFAULT_STEPS, DEFAULT_STRENGTH, DEFAULT_TEXT_SCALE
from ip2n.pipeline.edit import (
    DeviceError,
    EditPipeline,
    EditPipelineOutput,
    IncompatibleWeightsError,
    PresetError,
    edit_codes,
    edit_schedule,
    resolve_device,
)
from ip2n.pipeline.inputs import (
    ImageInputError,
    InstructionError,
    check_instructions,
    check_square_crop,
    combine_instructions,
    edit_prompts,
    load_image,
    prepare_image,
)
from ip2n.pipeline.result import EditResult, EditSettings, comparison_grid
from ip2n.pipeline.scope import NotAWorldHeadError, OutsideWorldError, UnknownInstructionError
from ip2n.registry import MODEL_PRESETS, ModelPreset

__all__ = [
    "DEFAULT_IMAGE_SCALE",
    "DEFAULT_STEPS",
    "DEFAULT_STRENGTH",
    "DEFAULT_TEXT_SCALE",
    "MODEL_PRESETS",
    "ModelPreset",
    "DeviceError",
    "EditPipeline",
    "EditPipelineOutput",
    "EditResult",
    "EditSettings",
    "ImageInputError",
    "IncompatibleWeightsError",
    "InstructionError",
    "NotAWorldHeadError",
    "OutsideWorldError",
    "PresetError",
    "UnknownInstructionError",
    "check_instructions",
    "check_square_crop",
    "combine_instructions",
    "comparison_grid",
    "edit_codes",
    "edit_prompts",
    "edit_schedule",
    "load_image",
    "prepare_image",
    "resolve_device",
]
