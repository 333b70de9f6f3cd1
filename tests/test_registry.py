"""The registry of named models (`ip2n.registry`): how the pipeline finds models it does not import."""

import json
import subprocess
import sys

import pytest

from ip2n import registry
from ip2n.pipeline import EditPipeline, PresetError
from ip2n.pipeline.edit import PAPER_DEFAULTS, preset_edit_defaults


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry as it is, restored after the test."""
    monkeypatch.setattr(registry, "MODEL_PRESETS", dict(registry.MODEL_PRESETS))
    monkeypatch.setattr(registry, "FOLDER_KINDS", dict(registry.FOLDER_KINDS))
    import ip2n.pipeline.edit
    import ip2n.pipeline.pretrained

    for module in (ip2n.pipeline.edit, ip2n.pipeline.pretrained):
        monkeypatch.setattr(module, "MODEL_PRESETS", registry.MODEL_PRESETS)
    monkeypatch.setattr(ip2n.pipeline.pretrained, "FOLDER_KINDS", registry.FOLDER_KINDS)


def test_importing_ip2n_registers_the_built_in_model_without_torch():
    code = (
        "import sys, ip2n.registry as r; "
        "print(sorted(r.MODEL_PRESETS), sorted(r.FOLDER_KINDS), r.MODEL_PRESETS['synthetic'].world_model, "
        "'torch' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.split() == ["['synthetic']", "['synthetic-world']", "True", "False"]


def test_a_registered_model_is_loaded_by_name(clean_registry):
    loaded = []

    def load(device, progress):
        loaded.append((device.type, progress))
        return EditPipeline.__new__(EditPipeline)

    registry.register_model("mine", registry.ModelPreset(load, lambda: PAPER_DEFAULTS))
    assert isinstance(EditPipeline.from_preset("mine", "cpu", progress=True), EditPipeline)
    assert isinstance(EditPipeline.from_pretrained("mine", device="cpu"), EditPipeline)
    assert loaded == [("cpu", True), ("cpu", False)]
    assert preset_edit_defaults("mine") == PAPER_DEFAULTS
    with pytest.raises(PresetError, match=r"unknown model 'theirs' \(built-in models: mine, synthetic\)"):
        EditPipeline.from_preset("theirs")


def test_a_name_or_folder_kind_is_registered_once(clean_registry):
    preset = registry.ModelPreset(lambda device, progress: None, lambda: PAPER_DEFAULTS)
    registry.register_model("mine", preset)
    registry.register_model("mine", preset)  # the same entry again (a module imported twice) is fine
    with pytest.raises(ValueError, match="a model named 'synthetic' is registered already"):
        registry.register_model("synthetic", preset)
    kind = registry.FolderKind("mine.json", lambda folder, device, progress: None, lambda pipeline: False)
    with pytest.raises(ValueError, match="a folder kind 'synthetic-world' is registered already"):
        registry.register_folder_kind("synthetic-world", kind)


def test_a_folder_is_loaded_by_the_kind_its_manifest_or_index_names(clean_registry, tmp_path):
    from ip2n.checkpoints.safe_unpickle import CheckpointError

    pipeline = EditPipeline.__new__(EditPipeline)
    seen = []

    def load(folder, device, progress):
        seen.append(folder)
        return pipeline

    registry.register_folder_kind("mine", registry.FolderKind("mine.json", load, lambda p: False))
    by_manifest = tmp_path / "trained"
    by_manifest.mkdir()
    (by_manifest / "mine.json").write_text("{}")
    assert EditPipeline.from_pretrained(by_manifest, device="cpu") is pipeline and seen == [by_manifest]
    unknown = tmp_path / "saved"
    unknown.mkdir()
    (unknown / "ip2n_pipeline.json").write_text(json.dumps({"kind": "theirs"}))
    with pytest.raises(CheckpointError, match=r"kind 'theirs'.*\('eg3d', 'synthetic-world', 'mine'\)"):
        EditPipeline.from_pretrained(unknown, device="cpu")
