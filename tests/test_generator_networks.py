"""EG3D generator networks: state-dict layout and numerical parity with the official code.

Reference data: fixtures/eg3d_small (scaled-down official generator), fixtures/eg3d_small/sr8xdc_*
(the real FFHQ-512 super-resolution module) and fixtures/manifests/eg3d_ffhq512_generator.json.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ip2n.generator.decoder import OSGDecoder
from ip2n.generator.superresolution import Hybrid2X, Hybrid4X, Hybrid8XDC
from ip2n.generator.synthesis import StyleGAN2Backbone, SynthesisNetwork
from ip2n.ops import bias_act, downsample2d, filter2d, modulated_conv2d, setup_filter, upfirdn2d, upsample2d

ATOL = 1e-4  # fixtures/README: max-abs tolerance for float32 outputs
# Float64 sums of 65 536 float32 values: the per-element noise (~5e-6) adds up; README: relative ~1e-5.
SUMS_RTOL = 3e-5
SMALL_BACKBONE = dict(channel_base=1024, channel_max=16, mapping_hidden=64)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = (actual - expected).abs().max().item()
    assert error <= atol, f"max abs error {error:.3g} > {atol}"


def submodule_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


@pytest.fixture(scope="module")
def small_state(fixtures_dir) -> dict[str, torch.Tensor]:
    return load_file(fixtures_dir / "eg3d_small" / "state_dict.safetensors")


@pytest.fixture(scope="module")
def small_io(fixtures_dir) -> dict[str, torch.Tensor]:
    return load_file(fixtures_dir / "eg3d_small" / "io.safetensors")


@pytest.fixture(scope="module")
def small_backbone(small_state) -> StyleGAN2Backbone:
    backbone = StyleGAN2Backbone(**SMALL_BACKBONE).eval()
    backbone.load_state_dict(submodule_state(small_state, "backbone."))
    return backbone


@pytest.fixture(scope="module")
def small_planes(small_backbone, small_io) -> torch.Tensor:
    with torch.inference_mode():
        return small_backbone.synthesis(small_io["ws"], noise_mode="const")  # (2, 96, 256, 256)


# --- state-dict layout -----------------------------------------------------------------------------


def test_ffhq512_state_dict_matches_official_manifest(fixtures_dir):
    manifest = json.loads((fixtures_dir / "manifests" / "eg3d_ffhq512_generator.json").read_text())
    expected = {key: (tuple(shape), dtype) for key, (shape, dtype) in manifest["state_dict"].items()}
    with torch.device("meta"):
        parts = {"backbone.": StyleGAN2Backbone(), "superresolution.": Hybrid8XDC(), "decoder.": OSGDecoder()}
    actual = {
        prefix + key: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for prefix, module in parts.items()
        for key, value in module.state_dict().items()
    }
    assert set(actual) == set(expected)
    assert actual == expected
    assert parts["backbone."].num_ws == manifest["num_ws"]


def test_small_generator_loads_strictly(small_state):
    modules = {
        "backbone.": StyleGAN2Backbone(**SMALL_BACKBONE),
        "superresolution.": Hybrid2X(),
        "decoder.": OSGDecoder(),
    }
    covered = set()
    for prefix, module in modules.items():
        state = submodule_state(small_state, prefix)
        module.load_state_dict(state, strict=True)
        assert {k: v.shape for k, v in module.state_dict().items()} == {k: v.shape for k, v in state.items()}
        covered |= {prefix + key for key in state}
    assert covered == set(small_state)


def test_hybrid4x_layout():
    with torch.device("meta"):
        module = Hybrid4X()
    state = module.state_dict()
    assert state["block0.conv0.weight"].shape == (128, 32, 3, 3)
    assert state["block0.conv0.noise_const"].shape == (128, 128)
    assert state["block1.conv1.noise_const"].shape == (256, 256)
    assert state["resample_filter"].shape == (4, 4)


# --- numerical parity with the official code -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "psi", "cutoff"),
    [("ws", 1.0, None), ("ws_trunc07", 0.7, 14), ("ws_trunc05_nocutoff", 0.5, None)],
)
def test_mapping_matches_official(small_backbone, small_io, name, psi, cutoff):
    with torch.inference_mode():
        ws = small_backbone.mapping(
            small_io["z"], small_io["c"], truncation_psi=psi, truncation_cutoff=cutoff
        )
    assert_close(ws, small_io[name])


def test_synthesis_planes_match_official(small_planes, small_io):
    assert small_planes.shape == (2, 96, 256, 256)
    assert small_planes.is_contiguous()
    assert_close(small_planes[..., ::8, ::8], small_io["planes_stride8"])
    assert_close(small_planes[..., 120:136, 120:136], small_io["planes_crop"])
    torch.testing.assert_close(
        small_planes.double().sum(dim=(2, 3)), small_io["planes_channel_sums"], rtol=SUMS_RTOL, atol=0
    )


def test_synthesis_batch_of_one_matches_official(small_backbone, small_io):
    """A batch of one takes the folded-kernel path of the modulated convolutions."""
    with torch.inference_mode():
        planes = torch.cat([small_backbone.synthesis(small_io["ws"][i : i + 1]) for i in range(2)])
    assert_close(planes[..., ::8, ::8], small_io["planes_stride8"])
    assert_close(planes[..., 120:136, 120:136], small_io["planes_crop"])
    torch.testing.assert_close(
        planes.double().sum(dim=(2, 3)), small_io["planes_channel_sums"], rtol=SUMS_RTOL, atol=0
    )


def sample_triplanes(planes: torch.Tensor, points: torch.Tensor, box_warp: float = 1.0) -> torch.Tensor:
    """Official plane sampling (enough to drive the decoder): planes (N, 96, H, W), points (N, M, 3)
    → (N, 3, M, 32), planes at (x, y), (x, z), (z, x), bilinear, zero padding, align_corners False."""
    batch, _, height, width = planes.shape
    coords = points * (2 / box_warp)
    grid = torch.stack([coords[..., [0, 1]], coords[..., [0, 2]], coords[..., [2, 0]]], dim=1)  # (N, 3, M, 2)
    features = F.grid_sample(
        planes.reshape(batch * 3, 32, height, width),
        grid.reshape(batch * 3, 1, -1, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (N·3, 32, 1, M)
    return features.reshape(batch, 3, 32, -1).permute(0, 1, 3, 2)


@pytest.fixture(scope="module")
def small_decoder(small_state) -> OSGDecoder:
    decoder = OSGDecoder().eval()
    decoder.load_state_dict(submodule_state(small_state, "decoder."))
    return decoder


def test_decoder_matches_official_sample_mixed(small_planes, small_decoder, small_io):
    with torch.inference_mode():
        out = small_decoder(sample_triplanes(small_planes, small_io["points"]))
    assert_close(out["sigma"], small_io["sigma"])
    assert_close(out["rgb"], small_io["rgb_features"])


def test_mapping_synthesis_decoder_chain_matches_official_sample(small_backbone, small_decoder, small_io):
    """G.sample(points, z, c, ψ 0.7, cutoff 14): mapping → synthesis → plane sampling → decoder."""
    with torch.inference_mode():
        planes = small_backbone(small_io["z"], small_io["c"], truncation_psi=0.7, truncation_cutoff=14)
        out = small_decoder(sample_triplanes(planes, small_io["points"]))
    assert_close(out["sigma"], small_io["sample_sigma"])
    assert_close(out["rgb"], small_io["sample_rgb"])


def test_superresolution_2x_matches_official(small_state, small_io):
    """Neural-rendered 32² → resized to 64² (bilinear, antialias) → 128², conv_clamp 256."""
    module = Hybrid2X().eval()
    module.load_state_dict(submodule_state(small_state, "superresolution."))
    with torch.inference_mode():
        image = module(small_io["image_raw"], small_io["feature_image"], small_io["ws"], noise_mode="none")
    assert_close(image, small_io["image"])


def test_superresolution_8xdc_matches_official(fixtures_dir):
    module = Hybrid8XDC().eval()
    module.load_state_dict(load_file(fixtures_dir / "eg3d_small" / "sr8xdc_state_dict.safetensors"))
    io = load_file(fixtures_dir / "eg3d_small" / "sr8xdc_io.safetensors")
    with torch.inference_mode():
        out = module(io["rgb"], io["x"], io["ws"], noise_mode="none")
    assert out.is_contiguous()
    assert_close(out, io["out"])


# --- behaviour ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_synthesis() -> SynthesisNetwork:
    torch.manual_seed(0)
    network = SynthesisNetwork(w_dim=8, resolution=16, out_channels=6, channel_base=64, channel_max=8).eval()
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.endswith(("noise_strength", "bias")):
                parameter.normal_(0.0, 0.1)
    return network


def test_noise_modes(tiny_synthesis):
    ws = torch.randn(2, tiny_synthesis.num_ws, 8)
    with torch.inference_mode():
        const = tiny_synthesis(ws, noise_mode="const")
        assert torch.equal(const, tiny_synthesis(ws, noise_mode="const"))
        assert not torch.allclose(const, tiny_synthesis(ws, noise_mode="none"))
        random_a = tiny_synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
        random_b = tiny_synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
        random_c = tiny_synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(2))
    assert torch.equal(random_a, random_b)
    assert not torch.allclose(random_a, random_c)
    with pytest.raises(ValueError, match="noise_mode"):
        tiny_synthesis(ws, noise_mode="bogus")
    with pytest.raises(ValueError, match="ws must be"):
        tiny_synthesis(ws[:, :-1])


def test_synthesis_autograd_path_matches_inference(tiny_synthesis):
    ws = torch.randn(2, tiny_synthesis.num_ws, 8, requires_grad=True)
    image = tiny_synthesis(ws)
    with torch.inference_mode():
        assert_close(image.detach(), tiny_synthesis(ws.detach()), atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2])
def test_synthesis_gradients_are_correct(batch):
    """The identity loss back-propagates renders into W+ (and training may update the weights):
    check the in-place shortcuts against finite differences, for both modulation paths."""
    torch.manual_seed(0)
    network = SynthesisNetwork(w_dim=4, resolution=8, out_channels=2, channel_base=16, channel_max=3).double()
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.endswith(("noise_strength", "bias")):
                parameter.normal_(0.0, 0.1)
    names, parameters = zip(*network.named_parameters())
    ws = torch.randn(batch, network.num_ws, 4, dtype=torch.float64)

    def render(ws, *parameters):
        return torch.func.functional_call(network, dict(zip(names, parameters)), (ws,))

    inputs = (ws.requires_grad_(), *(p.detach().requires_grad_() for p in parameters))
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5)


def test_superresolution_clamps_layer_outputs_at_256():
    """The official SR layers are fp16 layers and clamp at ±256 even in fp32 (the fixtures never reach it)."""
    torch.manual_seed(0)
    inputs = (torch.randn(1, 3, 64, 64), torch.randn(1, 32, 64, 64), torch.randn(1, 14, 512))
    images = {}
    for clamp in (256.0, None):
        torch.manual_seed(1)
        module = Hybrid2X(conv_clamp=clamp).eval()
        with torch.no_grad():
            module.block1.torgb.bias.fill_(1000.0)
            images[clamp] = module(*inputs)
    assert images[None].min() > 900
    assert images[256.0].max() < 300


def test_superresolution_output_sizes():
    torch.manual_seed(0)
    module = Hybrid4X(in_channels=8).eval()
    with torch.inference_mode():
        image = module(torch.randn(1, 3, 64, 64), torch.randn(1, 8, 64, 64), torch.randn(1, 14, 512))
    assert image.shape == (1, 3, 256, 256)


# --- ops --------------------------------------------------------------------------------------------


def test_setup_filter_is_normalised_outer_product():
    f = setup_filter((1, 3, 3, 1))
    assert f.shape == (4, 4)
    assert torch.allclose(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)


def test_upfirdn2d_against_direct_convolution_sum():
    """A true convolution (not a correlation): checked against the defining sum for an asymmetric filter."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    f = torch.rand(2, 3, dtype=torch.float64)
    up, down, (left, right, top, bottom) = 2, 1, (2, 1, 1, 0)
    out = upfirdn2d(x, f, up=up, down=down, padding=(left, right, top, bottom), gain=3.0)
    upsampled = torch.zeros(1, 2, 10, 12, dtype=torch.float64)
    upsampled[:, :, ::2, ::2] = x
    padded = F.pad(upsampled, [left, right, top, bottom])
    expected = torch.zeros_like(out)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            for a in range(2):
                for b in range(3):
                    # y[i, j] = Σ f[a, b] · p[i + (fh−1−a), j + (fw−1−b)]
                    expected[:, :, i, j] += 3.0 * f[a, b] * padded[:, :, i + 1 - a, j + 2 - b]
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 1), (1, 1), (1, 4, 6, 4, 1)])
@pytest.mark.parametrize("factor", [2, 4])
def test_resampling_shortcuts_equal_upfirdn2d(taps, factor):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ramp = torch.linspace(0.5, 1.5, len(taps), dtype=torch.float64)
    f = setup_filter(taps).double() * ramp[None, :] * ramp.flip(0)[:, None]  # asymmetric in both axes
    fh, fw = f.shape
    up_padding = ((fw + factor - 1) // 2, (fw - factor) // 2, (fh + factor - 1) // 2, (fh - factor) // 2)
    expected = upfirdn2d(x, f, up=factor, padding=up_padding, gain=1.5 * factor**2)
    torch.testing.assert_close(upsample2d(x, f, factor, gain=1.5), expected)
    down_padding = ((fw - factor + 1) // 2, (fw - factor) // 2, (fh - factor + 1) // 2, (fh - factor) // 2)
    expected = upfirdn2d(x, f, down=factor, padding=down_padding, gain=1.5)
    torch.testing.assert_close(downsample2d(x, f, factor, gain=1.5), expected)
    torch.testing.assert_close(
        filter2d(x, f, (2, 0, 1, 1), gain=0.5), upfirdn2d(x, f, padding=(2, 0, 1, 1), gain=0.5)
    )


def test_upsample2d_preserves_constant_interior():
    x = torch.full((1, 1, 8, 8), 2.5)
    out = upsample2d(x, setup_filter((1, 3, 3, 1)))
    assert out.shape == (1, 1, 16, 16)
    assert torch.allclose(out[..., 2:-2, 2:-2], torch.full((12, 12), 2.5))


def test_bias_act_paths_agree():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 4) * 10
    bias = torch.randn(5)
    expected = (F.leaky_relu(x + bias[:, None, None], 0.2) * math.sqrt(2)).clamp(-3, 3)
    torch.testing.assert_close(bias_act(x, bias, "lrelu", clamp=3.0), expected)
    x_requires_grad = x.clone().requires_grad_()
    torch.testing.assert_close(bias_act(x_requires_grad, bias, "lrelu", clamp=3.0, inplace=True), expected)
    inplace_input = x.clone()
    torch.testing.assert_close(bias_act(inplace_input, bias, "lrelu", clamp=3.0, inplace=True), expected)
    torch.testing.assert_close(bias_act(x, bias, dim=1), x + bias[:, None, None])
    with pytest.raises(ValueError, match="activation"):
        bias_act(x, activation="gelu")


def reference_modulated_conv(x, weight, styles, demodulate, up, f):
    """Per-sample kernels by definition; upsampling as zero insertion → true convolution → FIR."""
    outputs = []
    for sample, style in zip(x, styles):
        w = weight * style[None, :, None, None]
        if demodulate:
            w = w / w.square().sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        sample = sample[None]
        if up == 1:
            outputs.append(F.conv2d(sample, w, padding=w.shape[-1] // 2))
            continue
        height, width = sample.shape[2:]
        zeros = upfirdn2d(sample, torch.ones(1, 1, dtype=x.dtype), up=2)  # (1, I, 2H, 2W)
        y = F.conv2d(zeros, w.flip([2, 3]), padding=2)[..., : 2 * height + 1, : 2 * width + 1]
        outputs.append(upfirdn2d(y, f, padding=1, gain=4))
    return torch.cat(outputs)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("up", "kernel", "demodulate"), [(1, 3, True), (2, 3, True), (1, 1, False)])
def test_modulated_conv2d_matches_definition(batch, up, kernel, demodulate):
    torch.manual_seed(0)
    x = torch.randn(batch, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, kernel, kernel, dtype=torch.float64)
    styles = torch.randn(batch, 4, dtype=torch.float64)
    f = setup_filter((1, 3, 3, 1)).double()
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_filter=f)
    torch.testing.assert_close(out, reference_modulated_conv(x, weight, styles, demodulate, up, f))


@pytest.fixture
def one_thread():
    """NNPACK is only used when torch runs on one thread (on more, oneDNN is as fast)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_large_inference_convolutions_go_through_nnpack_and_match_onednn(one_thread):
    from ip2n.ops import fast_conv

    if not fast_conv.nnpack_ready():
        pytest.skip("this torch build has no NNPACK")
    torch.manual_seed(0)
    x = torch.randn(1, 16, 64, 64)
    weight = torch.randn(8, 16, 3, 3)
    styles = torch.randn(1, 16)
    with torch.no_grad():
        assert fast_conv.uses_nnpack(x, weight)
        fast = modulated_conv2d(x, weight, styles)
        with fast_conv.exact_convolutions():
            assert not fast_conv.uses_nnpack(x, weight)
            exact = modulated_conv2d(x, weight, styles)
    assert fast.is_contiguous() and exact.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(fast, exact)  # really another kernel...
    torch.testing.assert_close(
        fast, exact, rtol=0, atol=1e-4 * float(exact.abs().max())
    )  # ...with the same values


def test_convolutions_that_need_gradients_or_are_small_stay_on_onednn(one_thread):
    from ip2n.ops import fast_conv

    big, small = torch.randn(1, 4, 64, 64), torch.randn(1, 4, 32, 32)
    weight = torch.randn(4, 4, 3, 3)
    if fast_conv.nnpack_ready():
        assert fast_conv.uses_nnpack(big, weight)  # the reference case: each change below turns NNPACK off
        torch.set_num_threads(2)
        assert not fast_conv.uses_nnpack(big, weight)  # more than NNPACK_MAX_THREADS threads: oneDNN
        torch.set_num_threads(1)
    assert not fast_conv.uses_nnpack(small, weight)
    assert not fast_conv.uses_nnpack(big, torch.randn(4, 4, 1, 1))
    assert not fast_conv.uses_nnpack(big.double(), weight.double())
    assert not fast_conv.uses_nnpack(big, weight.requires_grad_())
    x = big.requires_grad_()
    fast_conv.conv2d_same(x, weight, 1).sum().backward()  # autograd works as with F.conv2d
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize(("height", "padding"), [(70, 1), (67, 2)])
def test_nnpack_convolution_in_bands_matches_one_pass(monkeypatch, one_thread, height, padding):
    from ip2n.ops import fast_conv

    if not fast_conv.nnpack_ready():
        pytest.skip("this torch build has no NNPACK")
    torch.manual_seed(1)
    x = torch.randn(2, 3, height, 64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, 3, 2 * padding + 1, 2 * padding + 1)
    # Bands of 16 rows: a last band shorter than the others, and borders at the top and bottom.
    monkeypatch.setattr(fast_conv, "NNPACK_BAND_ELEMENTS", 2 * 3 * 64 * 16)
    with torch.no_grad():
        banded = fast_conv.conv2d_same(x, weight, padding)
        exact = F.conv2d(x, weight, padding=padding)
    assert banded.shape == exact.shape and banded.is_contiguous()
    torch.testing.assert_close(banded, exact, rtol=0, atol=1e-4 * float(exact.abs().max()))
