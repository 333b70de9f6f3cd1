"""Training data: the official triplet layout, bad-data skipping, pre-encoding and its cache."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ip2n.rendering.cameras import frontal_camera
from ip2n.training.config import ModelConfig
from ip2n.training.data import read_triplets
from ip2n.training.encoding import encode_pairs, load_encodings, network_fingerprint, save_encodings
from ip2n.training.models import build_frozen_networks

TINY_MODELS = ModelConfig(dit="tiny", dit_overrides={"context_dim": 8}, text_encoder="tiny", encoder="small",
                          encoder_type="WPlusEncoder", identity="small", generator="eg3d-small", weights_dir=None)


def write_triplets(root: Path, instructions: dict[str, str], seed: int = 0, size: int = 32) -> Path:
    """Pair folders `<name>/<name>_{0,1}.png` + `<name>.txt` (text given per name) and dataset.json."""
    rng = np.random.default_rng(seed)
    labels = []
    for name, text in instructions.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in (0, 1):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{name}_{k}.png")
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
        labels.append([f"{name}/{name}_0.png", frontal_camera()[0].tolist()])
    (root / "dataset.json").write_text(json.dumps({"labels": labels}), encoding="utf-8")
    return root


def test_one_sample_per_pair_and_instruction(tmp_path):
    write_triplets(tmp_path, {"00000": "make her smile\nadd glasses\n", "00001": "turn the hair blond"})
    dataset, report = read_triplets(tmp_path)
    assert [pair.name for pair in dataset.pairs] == ["00000", "00001"]
    assert [(s.pair_index, s.instruction) for s in dataset.samples] == [
        (0, "make her smile"), (0, "add glasses"), (1, "turn the hair blond")]
    assert torch.equal(dataset.cameras(), frontal_camera().expand(2, -1))
    assert not report.skipped


def test_bad_data_is_skipped_with_counts(tmp_path, caplog):
    write_triplets(tmp_path, {"good": "smile\n\n  \nfrown\n", "noedit": "x", "notext": "x", "nolabel": "x",
                              "blank": "\n\n", "broken": "add a hat"})
    (tmp_path / "noedit" / "noedit_1.png").unlink()
    (tmp_path / "notext" / "notext.txt").unlink()
    (tmp_path / "broken" / "broken_1.png").write_bytes(b"not a png at all")
    labels = json.loads((tmp_path / "dataset.json").read_text())
    labels["labels"] = [entry for entry in labels["labels"] if not entry[0].startswith("nolabel")]
    (tmp_path / "dataset.json").write_text(json.dumps(labels))

    dataset, report = read_triplets(tmp_path)
    assert sorted(pair.name for pair in dataset.pairs) == ["broken", "good"]
    assert report.skipped == {"missing edited image": 1, "missing or unreadable instruction file": 1,
                              "missing camera label": 1, "empty instruction line": 4, "no instruction": 1}
    assert "skipping" in caplog.text

    # The unreadable image is found when encoding; the pair is dropped, training data remains.
    networks = build_frozen_networks(TINY_MODELS, torch.device("cpu"))
    keep, encodings = encode_pairs(dataset, networks, report, batch_size=1)
    assert keep == [False, True] and report.skipped["unreadable image"] == 1
    dataset = dataset.keep_pairs(keep)
    assert [s.instruction for s in dataset.samples] == ["smile", "frown"]
    assert encodings.source_latent.shape == (1, 512, 4, 4) and encodings.edited_identity.shape == (1, 512)


def test_zero_samples_are_refused(tmp_path):
    write_triplets(tmp_path, {"a": "\n \n"})
    with pytest.raises(ValueError, match="no usable training samples"):
        read_triplets(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        read_triplets(tmp_path / "missing")
    (tmp_path / "dataset.json").unlink()
    (tmp_path / "a" / "a.txt").write_text("smile")
    with pytest.raises(ValueError, match="no usable training samples"):
        read_triplets(tmp_path)


def test_encodings_match_the_frozen_networks_and_cache_round_trips(tmp_path):
    from ip2n.diffusion import pack_latent
    from ip2n.encoding import encoder_input

    root = write_triplets(tmp_path / "data", {"p0": "smile", "p1": "frown"})
    dataset, report = read_triplets(root)
    networks = build_frozen_networks(TINY_MODELS, torch.device("cpu"))
    keep, encodings = encode_pairs(dataset, networks, report, batch_size=3)
    with Image.open(root / "p1" / "p1_1.png") as image:
        edited = encoder_input(image.convert("RGB"))[None]
    with torch.no_grad():
        assert torch.allclose(encodings.edited_latent[1], pack_latent(networks.encoder(edited))[0], atol=1e-5)
        assert torch.allclose(encodings.edited_identity[1], networks.identity(edited)[0], atol=1e-5)

    fingerprint = network_fingerprint({"encoder": "small", "encoder_type": "WPlusEncoder", "identity": "small",
                                       "weights_dir": None, "init_seed": 0})
    cache = tmp_path / "cache.safetensors"
    save_encodings(cache, dataset, keep, encodings, fingerprint)
    cached_keep, cached = load_encodings(cache, dataset, fingerprint)
    assert cached_keep == keep and all(torch.equal(a, b) for a, b in zip(cached.as_dict().values(), encodings.as_dict().values()))
    assert load_encodings(cache, dataset, {**fingerprint, "init_seed": 1}) is None
