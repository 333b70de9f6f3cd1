"""`ip2n demo`, the README's main job: every file, on the built-in synthetic world."""

import json

import numpy as np
import trimesh
from PIL import Image

from ip2n.cli import main


def test_demo_writes_every_output(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--views", "2", "--frames", "2", "--mesh-resolution", "32", "--threads", "1"]) == 0
    expected = {"source.png", "edited.png", "depth.png", "source_latent.npy", "edited_latent.npy", "views.png",
                "orbit.mp4", "mesh.ply", "result.json"}
    assert {path.name for path in out.iterdir()} == expected
    source, edited = np.asarray(Image.open(out / "source.png")), np.asarray(Image.open(out / "edited.png"))
    assert source.shape == edited.shape == (128, 128, 3)
    assert np.abs(source.astype(int) - edited.astype(int)).mean() > 1  # the edit is visible
    assert Image.open(out / "views.png").size == (2 * 128 + 4, 128)
    assert np.load(out / "edited_latent.npy").shape == (1, 14, 64)
    mesh = trimesh.load(out / "mesh.ply", process=False)
    assert len(mesh.faces) > 100
    result = json.loads((out / "result.json").read_text())
    assert result["edited_attributes"]["eyeglasses"] is True and result["source_attributes"]["eyeglasses"] is False
    assert "ground-truth latent space" in capsys.readouterr().out
