"""IR-SE50 identity network, PREIM3D inversion encoders, their preprocessing and the weight report.

There is no numerical fixture for these networks (~50–200 M parameters each): the official layouts
are checked against the manifests on the meta device, and behaviour on small random networks.
"""

import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from helpers import randomize_ as _randomize_
from ip2n.encoding import (
    ENCODER_TYPES,
    IdentityConfig,
    IdentityEncoder,
    PREIM3DEncoderConfig,
    build_encoder,
    encoder_input,
    encoder_preset,
    encoder_weights_from_psp,
    extract_identity,
    identity_preset,
    pool_for_identity,
)
from ip2n.encoding.preim3d import EqualLinear
from ip2n.weight_report import check_state_dict, shapes_from_manifest


def _manifest(fixtures_dir, name):
    return json.loads((fixtures_dir / "manifests" / name).read_text())


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=generator) * 2 - 1  # (N, 3, S, S) in [-1, 1]


# --- official layouts (meta device) -----------------------------------------------------------


def test_identity_state_dict_matches_official_manifest(fixtures_dir):
    manifest = _manifest(fixtures_dir, "irse50.json")
    with torch.device("meta"):
        model = IdentityEncoder(identity_preset("ir_se50"))
    state = model.state_dict()
    report = check_state_dict(state, shapes_from_manifest(manifest["state_dict"]))
    assert report.ok, report.summary()
    assert len(state) == 397
    assert list(state) == list(manifest["state_dict"])  # official key order
    assert {k: str(v.dtype) for k, v in state.items()} == {
        k: f"torch.{dtype}" for k, (_, dtype) in manifest["state_dict"].items()
    }
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]


@pytest.mark.parametrize(
    ("encoder_type", "num_tensors"),
    [
        ("Encoder4Editing", 565),
        ("WPlusEncoder", 394),
        ("GradualStyleEncoder", 565),
    ],
)
def test_encoder_state_dict_matches_official_manifest(fixtures_dir, encoder_type, num_tensors):
    entry = _manifest(fixtures_dir, "preim3d_encoder.json")["encoders"][encoder_type]
    expected = encoder_weights_from_psp(entry["state_dict"])  # drops the checkpoint's "encoder." prefix
    with torch.device("meta"):
        model = build_encoder(encoder_preset("ir_se50", encoder_type))
    state = model.state_dict()
    report = check_state_dict(state, shapes_from_manifest(expected))
    assert report.ok, report.summary()
    assert len(state) == num_tensors
    assert list(state) == list(expected)
    assert {k: str(v.dtype) for k, v in state.items()} == {
        k: f"torch.{dtype}" for k, (_, dtype) in expected.items()
    }
    assert sum(p.numel() for p in model.parameters()) == entry["num_parameters"]


def test_default_checkpoint_layout_is_encoder4editing(fixtures_dir):
    manifest = _manifest(fixtures_dir, "preim3d_encoder.json")
    config = PREIM3DEncoderConfig.from_opts(manifest["preim3d_train_options_defaults"])
    assert config == encoder_preset("ir_se50", "Encoder4Editing")
    with torch.device("meta"):
        model = build_encoder(config)
    expected = shapes_from_manifest(encoder_weights_from_psp(manifest["state_dict"]))
    report = check_state_dict(model.state_dict(), expected)
    assert report.ok, report.summary()


# --- checkpoint options and key selection -----------------------------------------------------


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_config_from_opts(encoder_type):
    opts = {"encoder_type": encoder_type, "stylegan_size": 256, "encoder_number_layers": 18}
    config = PREIM3DEncoderConfig.from_opts(opts)
    assert config.encoder_type == encoder_type
    assert config.num_styles == 14
    assert config.backbone.stage_units == (3, 4, 14, 3)  # always IR-SE50, like the official code


def test_config_from_opts_rejects_unsupported_type():
    with pytest.raises(ValueError, match="SingleStyleCodeEncoder"):
        PREIM3DEncoderConfig.from_opts({"encoder_type": "SingleStyleCodeEncoder"})


def test_config_from_opts_without_type_warns_and_uses_default(caplog):
    with caplog.at_level(logging.WARNING):
        config = PREIM3DEncoderConfig.from_opts({"stylegan_size": 512})
    assert config.encoder_type == "Encoder4Editing"
    assert config.num_styles == 16
    assert "encoder_type" in caplog.text


def test_encoder_weights_from_psp_keeps_only_encoder_entries():
    psp = {
        "encoder.input_layer.0.weight": torch.zeros(1),
        "encoder.styles.0.linear.bias": torch.ones(2),
        "decoder.backbone.mapping.fc0.weight": torch.zeros(3),
        "latent_avg": torch.zeros(4),
    }
    selected = encoder_weights_from_psp(psp)
    assert list(selected) == ["input_layer.0.weight", "styles.0.linear.bias"]
    assert selected["styles.0.linear.bias"] is psp["encoder.styles.0.linear.bias"]


def test_config_round_trips_through_dict():
    config = encoder_preset("tiny", "GradualStyleEncoder")
    assert PREIM3DEncoderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    identity = identity_preset("small")
    assert IdentityConfig.from_dict(json.loads(json.dumps(identity.to_dict()))) == identity


# --- preprocessing ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(300, 211), (97, 120), (256, 256)])
def test_encoder_input_matches_torchvision_transform(size):
    torchvision_transforms = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    official = torchvision_transforms.Compose(
        [
            torchvision_transforms.Resize((256, 256)),
            torchvision_transforms.ToTensor(),
            torchvision_transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )
    ours = encoder_input(image)
    assert ours.shape == (3, 256, 256) and ours.dtype == torch.float32
    assert torch.equal(ours, official(image))
    assert ours.min() >= -1 and ours.max() <= 1


def test_encoder_input_accepts_uint8_arrays():
    array = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    assert torch.equal(encoder_input(array), encoder_input(Image.fromarray(array)))
    assert torch.equal(encoder_input(array[:, ::-1]), encoder_input(Image.fromarray(array[:, ::-1].copy())))


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (Image.new("RGBA", (8, 8)), ValueError, "convert"),
        (Image.new("L", (8, 8)), ValueError, "mode 'L'"),
        (np.zeros((8, 8, 3), dtype=np.float32), ValueError, "uint8"),
        (np.zeros((8, 8), dtype=np.uint8), ValueError, r"\(H, W, 3\)"),
        (np.zeros((8, 8, 4), dtype=np.uint8), ValueError, r"\(H, W, 3\)"),
        (torch.zeros(3, 8, 8), TypeError, "Tensor"),
    ],
)
def test_encoder_input_rejects_other_inputs(image, error, message):
    with pytest.raises(error, match=message):
        encoder_input(image)


def test_identity_pool_follows_the_adaptive_window_rule():
    images = _images(2, 256, seed=3)
    pooled = pool_for_identity(images)
    assert pooled.shape == (2, 3, 112, 112)
    # Hand computation: output i averages input rows floor(i·256/112) … ceil((i+1)·256/112) − 1.
    starts = [math.floor(i * 256 / 112) for i in range(112)]
    stops = [math.ceil((i + 1) * 256 / 112) for i in range(112)]
    assert {b - a for a, b in zip(starts, stops)} == {3, 4}  # overlapping windows of two sizes
    source = images.double()
    expected = torch.empty(2, 3, 112, 112, dtype=torch.float64)
    for i in range(112):
        rows = source[:, :, starts[i] : stops[i]]
        for j in range(112):
            expected[:, :, i, j] = rows[:, :, :, starts[j] : stops[j]].mean(dim=(2, 3))
    assert (pooled.double() - expected).abs().max() < 1e-6


# --- identity network -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_identity():
    torch.manual_seed(0)
    return _randomize_(IdentityEncoder(identity_preset("small")), seed=10)


def test_identity_features_are_unit_vectors_and_deterministic(small_identity):
    images = _images(3, 256, seed=4)
    features = extract_identity(small_identity, images)
    assert features.shape == (3, 512) and features.dtype == torch.float32
    assert torch.allclose(features.norm(dim=1), torch.ones(3), atol=1e-6)
    assert torch.equal(features, extract_identity(small_identity, images))
    assert torch.equal(features, small_identity.embed(pool_for_identity(images)))
    assert (features[0] - features[1]).abs().max() > 1e-3  # different faces, different features


def test_identity_features_are_batch_independent(small_identity):
    images = _images(3, 256, seed=5)
    together = extract_identity(small_identity, images)
    alone = torch.cat([extract_identity(small_identity, images[i : i + 1]) for i in range(3)])
    assert (together - alone).abs().max() < 1e-5


def test_extract_identity_requires_eval_mode():
    model = IdentityEncoder(identity_preset("small"))
    with pytest.raises(RuntimeError, match="eval"):
        extract_identity(model.train(), _images(2, 256, seed=0))


def test_identity_embed_checks_input_size(small_identity):
    with pytest.raises(ValueError, match=r"\(N, 3, 112, 112\)"):
        small_identity.embed(_images(1, 128, seed=0))


def test_identity_save_load_round_trip(small_identity, tmp_path):
    path = tmp_path / "identity.safetensors"
    save_file(small_identity.state_dict(), str(path))
    reloaded = IdentityEncoder(identity_preset("small"))
    reloaded.load_state_dict(load_file(str(path)), strict=True)
    reloaded.eval()
    images = _images(2, 256, seed=6)
    assert torch.equal(extract_identity(reloaded, images), extract_identity(small_identity, images))


def test_full_size_identity_forward():
    torch.manual_seed(0)
    model = _randomize_(IdentityEncoder(identity_preset("ir_se50")), seed=11)
    features = extract_identity(model, _images(1, 256, seed=7))
    assert features.shape == (1, 512)
    assert torch.isfinite(features).all()
    assert abs(features.norm().item() - 1) < 1e-6


# --- inversion encoders -----------------------------------------------------------------------


def _tiny_encoder(encoder_type: str, seed: int = 20) -> torch.nn.Module:
    torch.manual_seed(0)
    return _randomize_(build_encoder(encoder_preset("tiny", encoder_type)), seed=seed)


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_encoder_output_shape_determinism_and_batch_independence(encoder_type):
    model = _tiny_encoder(encoder_type)
    config = model.config
    images = _images(3, config.resolution, seed=8)
    with torch.no_grad():
        codes = model(images)
        again = model(images)
        alone = torch.cat([model(images[i : i + 1]) for i in range(3)])
    assert codes.shape == (3, config.num_styles, config.style_dim) == (3, 14, 32)
    assert torch.isfinite(codes).all()
    assert torch.equal(codes, again)
    scale = codes.abs().max()
    assert scale > 0
    assert (codes - alone).abs().max() <= 1e-5 * scale
    assert (codes[0] - codes[1]).abs().max() > 1e-3 * scale


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_encoder_save_load_round_trip(encoder_type, tmp_path):
    model = _tiny_encoder(encoder_type)
    path = tmp_path / "encoder.safetensors"
    save_file(model.state_dict(), str(path))
    reloaded = build_encoder(encoder_preset("tiny", encoder_type))
    reloaded.load_state_dict(load_file(str(path)), strict=True)
    reloaded.eval()
    images = _images(2, 64, seed=9)
    with torch.no_grad():
        assert torch.equal(reloaded(images), model(images))


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_encoder_rejects_wrong_resolution(encoder_type):
    model = build_encoder(encoder_preset("tiny", encoder_type))
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        model(_images(1, 256, seed=0))


def _zero_style_heads(model, indices):
    with torch.no_grad():
        for i in indices:
            model.styles[i].linear.weight.zero_()
            model.styles[i].linear.bias.zero_()


def test_e4e_codes_are_base_code_plus_deltas():
    model = _tiny_encoder("Encoder4Editing")
    images = _images(2, 64, seed=10)
    with torch.no_grad():
        codes = model(images)
        _zero_style_heads(model, range(1, 14))  # all deltas zero → every style equals w0
        base_only = model(images)
    assert torch.equal(base_only, base_only[:, :1].expand(-1, 14, -1))
    assert torch.equal(base_only[:, 0], codes[:, 0])
    assert (codes[:, 1:] - codes[:, :1]).abs().max() > 1e-3 * codes.abs().max()


def test_gradual_style_codes_are_independent_heads():
    model = _tiny_encoder("GradualStyleEncoder")
    images = _images(2, 64, seed=11)
    with torch.no_grad():
        codes = model(images)
        _zero_style_heads(model, range(1, 14))
        only_first = model(images)
    assert torch.equal(only_first[:, 0], codes[:, 0])
    assert not only_first[:, 1:].any()


def test_wplus_codes_are_style_major():
    model = _tiny_encoder("WPlusEncoder")
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.copy_(torch.arange(14 * 32, dtype=torch.float32))
        codes = model(_images(2, 64, seed=12))
    # Style s takes output features s·D … (s+1)·D − 1 of the last linear layer.
    assert torch.equal(codes[1], torch.arange(14 * 32, dtype=torch.float32).view(14, 32))


@pytest.mark.parametrize("encoder_type", ["Encoder4Editing", "GradualStyleEncoder"])
@pytest.mark.parametrize(("lateral", "first_affected"), [("latlayer1", 3), ("latlayer2", 7)])
def test_pyramid_levels_feed_the_documented_styles(encoder_type, lateral, first_affected):
    model = _tiny_encoder(encoder_type)
    images = _images(1, 64, seed=13)
    with torch.no_grad():
        before = model(images)
        getattr(model, lateral).bias.add_(1.0)
        after = model(images)
    changed = (after - before).abs().amax(dim=(0, 2)) > 0  # (num_styles,)
    # For e4e this also shows that the base code w0 comes from the coarsest level only.
    assert not changed[:first_affected].any()
    assert changed[first_affected:].all()


def test_equal_linear_scales_weight_by_inverse_sqrt_fan_in():
    layer = EqualLinear(16, 4)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    expected = x @ (layer.weight / 4).T + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_full_size_encoder_forward(encoder_type):
    torch.manual_seed(0)
    model = _randomize_(build_encoder(encoder_preset("ir_se50", encoder_type)), seed=21)
    with torch.no_grad():
        codes = model(_images(1, 256, seed=14))
    assert codes.shape == (1, 14, 512)
    assert torch.isfinite(codes).all()


# --- weight report ----------------------------------------------------------------------------


def test_weight_report_ok():
    state = {"a": torch.zeros(2, 3), "b": torch.zeros(())}
    report = check_state_dict(state, {"a": [2, 3], "b": []})
    assert report.ok
    assert report.summary() == "OK: all 2 expected tensors present with the expected shapes"


def test_weight_report_lists_each_problem():
    state = {"a": torch.zeros(2, 4), "extra": torch.zeros(5)}
    report = check_state_dict(state, {"a": (2, 3), "b": (7,)})
    assert not report.ok
    assert report.missing == (("b", (7,)),)
    assert report.unexpected == (("extra", (5,)),)
    assert report.mismatched == (("a", (2, 3), (2, 4)),)
    assert report.summary().splitlines() == [
        "3 problems: 1 missing, 1 unexpected, 1 with a wrong shape",
        "missing: b (expected [7])",
        "unexpected: extra [5]",
        "shape mismatch: a: expected [2, 3], found [2, 4]",
    ]


def test_weight_report_summary_is_capped():
    report = check_state_dict({}, {f"k{i}": (1,) for i in range(30)})
    lines = report.summary(max_lines=5).splitlines()
    assert lines[0] == "30 problems: 30 missing"
    assert lines[1:6] == [f"missing: k{i} (expected [1])" for i in range(5)]
    assert lines[6:] == ["... and 25 more"]


def test_weight_report_optional_keys(fixtures_dir):
    manifest = _manifest(fixtures_dir, "irse50.json")
    with torch.device("meta"):
        state = IdentityEncoder(identity_preset("ir_se50")).state_dict()
    old_file = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    expected = shapes_from_manifest(manifest["state_dict"])
    strict = check_state_dict(old_file, expected)
    assert not strict.ok and len(strict.missing) == len(state) - len(old_file)
    tolerant = check_state_dict(old_file, expected, optional_suffixes=[".num_batches_tracked"])
    assert tolerant.ok and len(tolerant.missing_optional) == len(strict.missing)
    assert "optional" in tolerant.summary()
