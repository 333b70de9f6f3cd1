"""Training data: the official triplet layout, bad-data skipping, pre-encoding and its cache."""

import json

import pytest
import torch
from PIL import Image

from helpers.training_data import TINY_MODELS, write_triplets
from ip2n.rendering.cameras import frontal_camera
from ip2n.training.data import DataReport, read_triplets
from ip2n.training.encoding import (
    encode_image_pairs,
    encode_pairs,
    load_encodings,
    network_fingerprint,
    save_encodings,
)
from ip2n.training.models import build_frozen_networks


def test_one_sample_per_pair_and_instruction(tmp_path):
    write_triplets(tmp_path, {"00000": "make her smile\nadd glasses\n", "00001": "turn the hair blond"})
    dataset, report = read_triplets(tmp_path)
    assert [pair.name for pair in dataset.pairs] == ["00000", "00001"]
    assert [(s.pair_index, s.instruction) for s in dataset.samples] == [
        (0, "make her smile"),
        (0, "add glasses"),
        (1, "turn the hair blond"),
    ]
    assert torch.equal(dataset.cameras(), frontal_camera().expand(2, -1))
    assert not report.skipped


def test_bad_data_is_skipped_with_counts(tmp_path, caplog):
    write_triplets(
        tmp_path,
        {
            "good": "smile\n\n  \nfrown\n",
            "noedit": "x",
            "notext": "x",
            "nolabel": "x",
            "blank": "\n\n",
            "broken": "add a hat",
        },
    )
    (tmp_path / "noedit" / "noedit_1.png").unlink()
    (tmp_path / "notext" / "notext.txt").unlink()
    (tmp_path / "broken" / "broken_1.png").write_bytes(b"not a png at all")
    labels = json.loads((tmp_path / "dataset.json").read_text())
    labels["labels"] = [entry for entry in labels["labels"] if not entry[0].startswith("nolabel")]
    (tmp_path / "dataset.json").write_text(json.dumps(labels))

    dataset, report = read_triplets(tmp_path)
    assert sorted(pair.name for pair in dataset.pairs) == ["broken", "good"]
    assert report.skipped == {
        "missing edited image": 1,
        "missing or unreadable instruction file": 1,
        "missing camera label": 1,
        "empty instruction line": 4,
        "no instruction": 1,
    }
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

    fingerprint = network_fingerprint(
        {
            "encoder": "small",
            "encoder_type": "WPlusEncoder",
            "encoder_overrides": {},
            "identity": "small",
            "weights_dir": None,
            "init_seed": 0,
        }
    )
    cache = tmp_path / "cache.safetensors"
    save_encodings(cache, dataset, keep, encodings, fingerprint)
    cached_keep, cached = load_encodings(cache, dataset, fingerprint)
    assert cached_keep == keep and all(
        torch.equal(a, b) for a, b in zip(cached.as_dict().values(), encodings.as_dict().values())
    )
    assert load_encodings(cache, dataset, {**fingerprint, "init_seed": 1}) is None


def test_sharded_cache_equals_the_single_file_cache(tmp_path):
    from ip2n.training.sharded_cache import (
        ShardedEncodings,
        index_path,
        load_sharded_encodings,
        write_sharded_encodings,
    )

    names = ["p0", "p1", "p2", "p3", "p4"]
    root = write_triplets(tmp_path / "data", {name: f"edit {name}" for name in names})
    (root / "p2" / "p2_0.png").write_bytes(b"unreadable")  # a hole in the middle of a shard
    dataset, report = read_triplets(root)
    networks = build_frozen_networks(TINY_MODELS, torch.device("cpu"))
    keep, encodings = encode_pairs(dataset, networks, DataReport(), batch_size=2)
    fingerprint = {"model": "tiny"}

    cache = tmp_path / "cache" / "encodings.safetensors"
    sharded_keep = write_sharded_encodings(
        cache, dataset, networks, report, fingerprint, shard_pairs=2, batch_size=3
    )
    assert sharded_keep == keep == [True, True, False, True, True] and report.skipped["unreadable image"] == 1
    assert sorted(path.name for path in cache.parent.iterdir()) == [
        "encodings-00000.safetensors",
        "encodings-00001.safetensors",
        "encodings-00002.safetensors",
        "encodings.index.json",
    ]
    loaded_keep, sharded = load_sharded_encodings(cache, dataset, fingerprint)
    assert loaded_keep == keep and isinstance(sharded, ShardedEncodings) and len(sharded) == 4
    assert sharded.latent_shape == encodings.latent_shape
    order = torch.tensor([3, 0, 2, 1, 3, 0])  # across shards, repeated, out of order
    expected, got = encodings.rows(order).as_dict(), sharded.rows(order).as_dict()
    # Same networks, other batch composition: equal up to float summation order.
    assert all(torch.allclose(expected[name], got[name], atol=1e-5, rtol=0) for name in expected)
    _, one_shard = encode_image_pairs(dataset.pairs[2:4], networks, DataReport())
    assert torch.equal(
        sharded.rows(torch.tensor([2])).edited_latent, one_shard.edited_latent
    )  # p3, stored exactly
    assert load_sharded_encodings(cache, dataset, {"model": "other"}) is None
    index_path(cache).unlink()  # no index (an interrupted write): not a cache
    assert load_sharded_encodings(cache, dataset, fingerprint) is None
