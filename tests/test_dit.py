"""The conditional DiT against the official checkpoint layout and the dit_small reference outputs."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ip2n.diffusion.dit import DiT, dit_config, sincos_pos_embed_2d
from ip2n.ops import packed_linear
from ip2n.ops.packed_linear import packed_linears

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def io(fixtures_dir):
    return load_file(fixtures_dir / "dit_small" / "io.safetensors")


@pytest.fixture(scope="module")
def tiny_state_dict(fixtures_dir):
    return load_file(fixtures_dir / "dit_small" / "state_dict.safetensors")


@pytest.fixture(scope="module")
def tiny_model(tiny_state_dict):
    model = DiT(dit_config("tiny")).eval()
    model.load_state_dict(tiny_state_dict, strict=True)
    return model


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_tiny_preset_has_the_fixture_sizes(fixtures_dir):
    kwargs = json.loads((fixtures_dir / "dit_small" / "config.json").read_text())["init_kwargs"]
    config = dit_config("tiny")
    for name in (
        "input_size",
        "patch_size",
        "in_channels",
        "out_channels",
        "hidden_size",
        "depth",
        "num_heads",
    ):
        assert getattr(config, name) == kwargs[name], name
    assert (config.mlp_ratio, config.num_classes, config.learn_sigma) == (
        kwargs["mlp_ratio"],
        kwargs["num_classes"],
        kwargs["learn_sigma"],
    )


def test_full_preset_has_the_official_sizes(fixtures_dir):
    manifest = json.loads((fixtures_dir / "manifests" / "dit_b_g1_pair.json").read_text())
    config = dit_config("DiT-B_G/1_pair")
    for name, value in manifest["init_kwargs"].items():
        assert getattr(config, name) == value, name
    assert config.final_out_channels == manifest["derived"]["final_out_channels"]
    assert config.num_label_rows == manifest["derived"]["label_table_rows"]


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown DiT preset"):
        dit_config("DiT-XL/2")


def test_full_size_state_dict_equals_official_manifest(fixtures_dir):
    manifest = json.loads((fixtures_dir / "manifests" / "dit_b_g1_pair.json").read_text())
    with torch.device("meta"):
        model = DiT(dit_config("DiT-B_G/1_pair"))
    state = {
        key: [list(value.shape), str(value.dtype).removeprefix("torch.")]
        for key, value in model.state_dict().items()
    }
    expected = manifest["state_dict_without_cond_stage_model"]
    assert list(state) == list(expected)  # same keys in the same order
    assert state == expected
    assert (
        sum(value.numel() for value in model.state_dict().values())
        == manifest["num_parameters_without_cond_stage_model"]
    )


def test_tiny_state_dict_equals_fixture_keys(tiny_state_dict):
    model = DiT(dit_config("tiny"))
    state = model.state_dict()
    assert set(state) == set(tiny_state_dict)
    assert all(state[key].shape == tiny_state_dict[key].shape for key in state)


def test_pos_embed_is_the_official_sincos_table(fixtures_dir, io):
    full = load_file(fixtures_dir / "manifests" / "dit_b_g1_pair_pos_embed.safetensors")[
        "pos_embed_hidden768_grid4"
    ]
    assert torch.equal(sincos_pos_embed_2d(768, 4), full)
    assert torch.equal(DiT(dit_config("tiny")).pos_embed, io["pos_embed_official"])


@pytest.mark.parametrize(
    ("expected", "with_identity", "label"),
    [("decode_out", True, None), ("decode_out_no_id", False, None), ("decode_out_y0", True, 0)],
)
def test_forward_matches_official_decode(tiny_model, io, expected, with_identity, label):
    y = io["y"] if label is None else torch.full_like(io["y"], label)
    identity = io["idfeatures"] if with_identity else None
    with torch.no_grad():
        output = tiny_model(io["x"], io["t"], y, io["context_prompts"], identity)
    assert output.shape == (2, 1024, 4, 4)
    assert max_error(output, io[expected]) < TOLERANCE


def test_packed_per_step_linears_match_the_official_decode(tiny_model, io, monkeypatch):
    """The sampling loop's packed weights (`packed_linears`) give the official outputs, and the
    layers are plain again afterwards."""
    layers = tiny_model.per_step_linears()
    per_step = {id(layer) for layer in layers}
    unpacked = [
        name
        for name, module in tiny_model.named_modules()
        if isinstance(module, torch.nn.Linear) and id(module) not in per_step
    ]
    # Every other linear layer runs once per edit: adaLN modulations, context keys/values, embedders.
    assert unpacked and all(
        "adaLN_modulation" in name or name.endswith(("to_k", "to_v")) or "_embedder." in name
        for name in unpacked
    )
    assert len(layers) == 6 * tiny_model.config.depth + 1
    calls, packed_forward = [], packed_linear._packed_forward
    monkeypatch.setattr(
        packed_linear, "_packed_forward", lambda *args: calls.append(1) or packed_forward(*args)
    )
    with torch.no_grad():
        plain = tiny_model(io["x"], io["t"], io["y"], io["context_prompts"], io["idfeatures"])
        with packed_linears(layers, rows=2 * tiny_model.config.grid_size**2):
            assert all("forward" in layer.__dict__ for layer in layers)  # the packed multiply is in place
            packed = tiny_model(io["x"], io["t"], io["y"], io["context_prompts"], io["idfeatures"])
    assert len(calls) == len(layers)  # every per-step layer went through the packed kernel, once
    assert not any("forward" in layer.__dict__ for layer in layers)
    assert max_error(packed, io["decode_out"]) < TOLERANCE
    # Another summation order: close to the plain product (on some CPUs identical to the last bit).
    assert max_error(packed, plain) < 1e-4


def test_precomputed_context_equals_plain_context(tiny_model, io):
    with torch.no_grad():
        plain = tiny_model(io["x"], io["t"], io["y"], io["context_prompts"], io["idfeatures"])
        cache = tiny_model.precompute_context(io["context_prompts"])
        cached = tiny_model(io["x"], io["t"], io["y"], cache, io["idfeatures"])
    assert len(cache.keys_values) == tiny_model.config.depth
    assert cache.keys_values[0][0].shape == (2, 4, 77, 16)  # (N, heads, L, head_dim)
    assert torch.equal(plain, cached)


def test_identity_keep_scales_the_embedding_not_the_features(tiny_model, io):
    with torch.no_grad():
        kept = tiny_model(
            io["x"], io["t"], io["y"], io["context_prompts"], io["idfeatures"], identity_keep=torch.ones(2)
        )
        dropped = tiny_model(
            io["x"], io["t"], io["y"], io["context_prompts"], io["idfeatures"], identity_keep=torch.zeros(2)
        )
        zero_features = tiny_model(
            io["x"], io["t"], io["y"], io["context_prompts"], torch.zeros_like(io["idfeatures"])
        )
    assert max_error(kept, io["decode_out"]) < TOLERANCE
    assert max_error(dropped, io["decode_out_no_id"]) < TOLERANCE  # embedding × 0 = no identity term
    assert max_error(zero_features, io["decode_out_no_id"]) > 1e-2  # MLP(0) is not zero


def test_unused_embedders_do_not_change_the_output(tiny_model, io):
    model = DiT(tiny_model.config).eval()
    model.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        for embedder in (model.attr_embedder, model.camera_embedder, model.clipfeatures_embedder):
            for parameter in embedder.parameters():
                parameter.add_(1.0)
        output = model(io["x"], io["t"], io["y"], io["context_prompts"], io["idfeatures"])
    assert torch.equal(
        output, tiny_model(io["x"], io["t"], io["y"], io["context_prompts"], io["idfeatures"]).detach()
    )


def test_initialize_weights_starts_as_zero_map_and_is_seeded(io):
    model = DiT(dit_config("tiny"))
    model.initialize_weights(torch.Generator().manual_seed(0))
    other = DiT(dit_config("tiny"))
    other.initialize_weights(torch.Generator().manual_seed(0))
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )
    assert torch.equal(model.pos_embed, io["pos_embed_official"])
    with torch.no_grad():
        output = model(io["x"], io["t"], io["y"], io["context_prompts"], io["idfeatures"])
    assert torch.equal(output, torch.zeros_like(output))
