"""Schedule, partial DDIM, dual guidance, latent packing and the training loss against the fixtures."""

import math

import pytest
import torch
from safetensors.torch import load_file

from ip2n.diffusion.dit import DiT, dit_config
from ip2n.diffusion.guidance import (
    DualGuidanceDenoiser,
    dual_guidance,
    forward_dual_guidance,
    guide_branch_outputs,
    needed_branches,
)
from ip2n.diffusion.latent_packing import pack_latent, unpack_latent
from ip2n.diffusion.losses import (
    condition_dropout,
    dropout_draws,
    label_dropout,
    learned_range_log_variance,
    training_losses,
)
from ip2n.diffusion.sampling import (
    ddim_step,
    decode_timesteps,
    epsilon_from_v,
    partial_ddim_decode,
    q_sample,
    v_target,
)
from ip2n.diffusion.schedule import index_for_strength, make_schedule, space_timesteps

TOLERANCE = 1e-4
DDIM_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def ddim(fixtures_dir):
    return load_file(fixtures_dir / "diffusion" / "ddim.safetensors")


@pytest.fixture(scope="module")
def io(fixtures_dir):
    return load_file(fixtures_dir / "dit_small" / "io.safetensors")


@pytest.fixture(scope="module")
def tiny_model(fixtures_dir):
    model = DiT(dit_config("tiny")).eval()
    model.load_state_dict(load_file(fixtures_dir / "dit_small" / "state_dict.safetensors"))
    return model


@pytest.fixture(scope="module")
def ddim50():
    return make_schedule("ddim50")


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def branch_batch(io):
    """The official three-branch batch of the cfg_* fixtures: [text+image | image | unconditional]."""
    source = io["cfg_source"]
    x = torch.cat(
        [io["cfg_x_noisy"].repeat(3, 1, 1, 1), torch.cat([source, source, torch.zeros_like(source)])], dim=1
    )
    context = torch.cat([io["context_prompts"], io["context_empty"].expand(4, 77, 1024)])
    identity = torch.cat([io["idfeatures"], io["idfeatures"], torch.zeros_like(io["idfeatures"])])
    return x, io["t"].repeat(3), io["y"].repeat(3), context, identity


# --- schedule -------------------------------------------------------------------------------------


def test_base_schedule_is_bit_exact(ddim):
    schedule = make_schedule("")
    assert torch.equal(schedule.betas, ddim["base_betas"])
    assert torch.equal(schedule.alphas_cumprod, ddim["base_alphas_cumprod"])
    assert torch.equal(schedule.timestep_map, torch.arange(1000))


@pytest.mark.parametrize(
    "table",
    [
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
    ],
)
def test_ddim50_tables_are_bit_exact(ddim, ddim50, table):
    assert getattr(ddim50, table).dtype == torch.float64
    assert torch.equal(getattr(ddim50, table), ddim[f"ddim50_{table}"])


def test_ddim50_timestep_map(ddim, ddim50):
    assert torch.equal(ddim50.timestep_map, ddim["ddim50_timestep_map"])
    assert ddim50.timestep_map[:3].tolist() == [0, 20, 40] and ddim50.timestep_map[-1] == 980


@pytest.mark.parametrize(
    ("respacing", "count", "head"),
    [("", 1000, [0, 1, 2]), ("ddim25", 25, [0, 40, 80]), ("10", 10, [0, 111, 222]), ("250", 250, [0, 4, 8])],
)
def test_space_timesteps(respacing, count, head):
    kept = space_timesteps(1000, respacing)
    assert len(kept) == count and kept[:3] == head and kept == sorted(kept)


def test_space_timesteps_sections():
    kept = space_timesteps(100, "2,3")  # sections [0, 50) and [50, 100)
    assert kept == [0, 49, 50, 74, 99]


def test_space_timesteps_rejects_impossible_requests():
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim999")
    with pytest.raises(ValueError):
        space_timesteps(10, "20")


def test_index_for_strength():
    assert index_for_strength(0.3, 50) == 15
    with pytest.raises(ValueError, match="strength"):
        index_for_strength(1.0, 50)


# --- forward noising and DDIM ---------------------------------------------------------------------


def test_q_sample_matches_fixture(ddim, io, ddim50):
    index = torch.tensor([15])
    assert max_error(q_sample(ddim["w"], index, ddim["noise"], ddim50), ddim["w_t"]) < DDIM_TOLERANCE
    assert max_error(q_sample(io["pipe_w"], index, io["pipe_noise"], ddim50), io["pipe_w_t"]) < DDIM_TOLERANCE


def scaled_sample_model(x, t):
    """The fixture's stand-in model: eps = 0.1·x, variance channels 0.25 (ignored)."""
    return torch.cat([0.1 * x, torch.full_like(x, 0.25)], dim=1)


def timestep_dependent_model(x, t):
    """The fixture's second stand-in: eps = 0.1·x + 0.001·t, t = the original timestep received."""
    return 0.1 * x + 0.001 * t.to(x.dtype).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize(
    ("model_fn", "suffix"), [(scaled_sample_model, ""), (timestep_dependent_model, "_tdep")]
)
def test_partial_ddim_decode_matches_official_loop(ddim, ddim50, model_fn, suffix):
    seen = []

    def recording_model(x, t):
        seen.append(t.tolist())
        return model_fn(x, t)

    result = partial_ddim_decode(recording_model, ddim["w"], 0.3, ddim50, noise=ddim["noise"])
    assert seen == [[timestep] for timestep in range(280, -1, -20)]  # original timesteps, from index 14
    assert result.trajectory.shape == (15, 1, 512, 4, 4)
    assert max_error(result.trajectory[:, 0], ddim[f"trajectory{suffix}"]) < DDIM_TOLERANCE
    assert max_error(result.pred_xstart[:, 0], ddim[f"pred_xstart{suffix}"]) < DDIM_TOLERANCE
    assert max_error(result.final, ddim[f"final{suffix}"]) < DDIM_TOLERANCE
    assert torch.equal(result.final, result.trajectory[-1])


def test_start_offset_zero_denoises_from_the_noised_index(ddim, ddim50):
    seen = []

    def recording_model(x, t):
        seen.append(int(t[0]))
        return scaled_sample_model(x, t)

    result = partial_ddim_decode(recording_model, ddim["w"], 0.3, ddim50, noise=ddim["noise"], start_offset=0)
    assert seen == list(range(300, -1, -20))
    assert result.trajectory.shape[0] == 16


def test_partial_ddim_decode_draws_noise_from_the_generator(ddim, ddim50):
    def run(seed):
        return partial_ddim_decode(
            scaled_sample_model, ddim["w"], 0.3, ddim50, generator=torch.Generator().manual_seed(seed)
        ).final

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_ddim_step_eta_one_has_the_posterior_variance(ddim50):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    index = torch.tensor([1, 10, 30, 49])
    with_noise, _ = ddim_step(x, index, eps, ddim50, eta=1.0, noise=torch.ones_like(x))
    without_noise, _ = ddim_step(x, index, eps, ddim50, eta=1.0, noise=torch.zeros_like(x))
    sigma = (with_noise - without_noise)[:, 0]
    torch.testing.assert_close(sigma**2, ddim50.posterior_variance[index].float(), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x, index, eps, ddim50, eta=1.0)


def test_last_ddim_step_returns_pred_xstart(ddim50):
    x = torch.randn(2, 3)
    x_prev, pred_xstart = ddim_step(x, torch.zeros(2, dtype=torch.int64), 0.1 * x, ddim50)
    assert torch.equal(x_prev, pred_xstart)


# --- latent packing -------------------------------------------------------------------------------


def test_pack_matches_fixture(ddim):
    assert torch.equal(pack_latent(ddim["pack_codes"]), ddim["pack_packed"])


def test_unpack_plus_latent_avg_matches_fixture(ddim):
    assert torch.equal(
        unpack_latent(ddim["pack_packed"], ddim["pack_latent_avg"]), ddim["pack_unpacked_plus_avg"]
    )


def test_pack_unpack_round_trip():
    codes = torch.randn(3, 14, 512)
    packed = pack_latent(codes)
    assert packed.shape == (3, 512, 4, 4)
    assert torch.equal(packed.flatten(2)[:, :, 14:], torch.zeros(3, 512, 2))
    assert torch.equal(packed[:, :, 1, 2], codes[:, 6])  # style 6 sits at row 1, column 2
    assert torch.equal(unpack_latent(packed), codes)


def test_packing_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="14"):
        pack_latent(torch.zeros(1, 16, 512))
    with pytest.raises(ValueError, match="4, 4"):
        unpack_latent(torch.zeros(1, 512, 16))


# --- dual guidance --------------------------------------------------------------------------------


def test_dual_guidance_formula_on_raw_branches(io):
    raw = io["cfg_raw_branches_no_id"]
    guided = guide_branch_outputs(raw, 2.5, 1.0, eps_channels=512)
    assert max_error(guided, io["cfg_out_no_id"]) < 1e-5
    e_ti, e_i, e_u = raw[:, :512].chunk(3)
    assert torch.equal(guided[:2, :512], dual_guidance(e_ti, e_i, e_u, 2.5, 1.0))
    assert torch.equal(guided[:, 512:], raw[:, 512:])  # each branch keeps its own variance channels
    assert torch.equal(guided[:2, :512], guided[4:, :512])


@pytest.mark.parametrize(
    ("expected", "text_scale", "image_scale", "with_identity"),
    [
        ("cfg_out", 2.5, 1.0, True),
        ("cfg_out_no_id", 2.5, 1.0, False),
        ("cfg_out_text7.5_img1.5", 7.5, 1.5, False),
    ],
)
def test_forward_dual_guidance_matches_official(
    tiny_model, io, expected, text_scale, image_scale, with_identity
):
    x, t, y, context, identity = branch_batch(io)
    with torch.no_grad():
        raw_branches = tiny_model(x, t, y, context)
        output = forward_dual_guidance(
            tiny_model, x, t, y, context, text_scale, image_scale, identity if with_identity else None
        )
    assert max_error(raw_branches, io["cfg_raw_branches_no_id"]) < TOLERANCE
    assert output.shape == (6, 1024, 4, 4)
    assert max_error(output, io[expected]) < TOLERANCE


def test_denoiser_with_identity_matches_the_official_guided_output(tiny_model, io):
    with torch.no_grad():
        denoiser = DualGuidanceDenoiser(
            tiny_model,
            io["cfg_source"],
            io["context_prompts"],
            io["context_empty"],
            2.5,
            1.0,
            identity=io["idfeatures"],
        )
        output = denoiser(io["cfg_x_noisy"], io["t"])
    assert output.shape == (2, 1024, 4, 4)
    assert max_error(output, io["cfg_out"][:2]) < TOLERANCE


def test_needed_branches_leaves_out_the_ones_with_zero_weight():
    assert needed_branches(2.5, 1.0) == (0, 1)  # the paper's defaults: no unconditional branch
    assert needed_branches(7.5, 1.5) == (0, 1, 2)
    assert needed_branches(1.5, 1.5) == (0, 2)
    assert needed_branches(1.0, 1.0) == (0,)
    assert needed_branches(0.0, 0.0) == (0, 2)  # text + image always runs (its variance is the output's)


@pytest.mark.parametrize(
    ("text_scale", "image_scale"), [(2.5, 1.0), (7.5, 1.5), (1.5, 1.5), (1.0, 1.0), (3.0, 0.5)]
)
def test_denoiser_runs_only_the_needed_branches_and_matches_all_three(
    tiny_model, io, text_scale, image_scale
):
    """Same guided output as the official three-branch batch (zero identity features in the
    unconditional branch), from a DiT call on only the branches whose weight is not zero."""
    x, t, y, context, identity = branch_batch(io)
    rows_seen = []
    hook = tiny_model.register_forward_pre_hook(lambda module, args: rows_seen.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            expected = forward_dual_guidance(tiny_model, x, t, y, context, text_scale, image_scale, identity)[
                :2
            ]
            rows_seen.clear()
            denoiser = DualGuidanceDenoiser(
                tiny_model,
                io["cfg_source"],
                io["context_prompts"],
                io["context_empty"],
                text_scale,
                image_scale,
                identity=io["idfeatures"],
            )
            output = denoiser(io["cfg_x_noisy"], io["t"])
    finally:
        hook.remove()
    assert rows_seen == [2 * len(needed_branches(text_scale, image_scale))]
    assert max_error(output, expected) < 1e-5


def test_official_edit_loop(tiny_model, io, ddim50):
    seen = []
    with torch.no_grad():
        source = pack_latent(io["pipe_codes"])
        denoiser = DualGuidanceDenoiser(
            tiny_model, source, io["context_prompts"][:1], io["context_empty"], 2.5, 1.0
        )

        def recording_denoiser(x, t):
            seen.append(int(t[0]))
            return denoiser(x, t)

        result = partial_ddim_decode(recording_denoiser, source, 0.3, ddim50, noise=io["pipe_noise"])
    assert torch.equal(source, io["pipe_w"])
    assert seen == list(range(280, -1, -20))
    assert max_error(result.trajectory, io["pipe_trajectory"]) < TOLERANCE
    assert max_error(result.final, io["pipe_final"]) < TOLERANCE
    assert max_error(unpack_latent(result.final, io["pipe_latent_avg"]), io["pipe_latents"]) < TOLERANCE


# --- training loss and condition dropout ----------------------------------------------------------


def test_training_loss_terms():
    schedule = make_schedule("")
    generator = torch.Generator().manual_seed(0)
    x_start = torch.randn(4, 8, 4, 4, generator=generator)
    noise = torch.randn(4, 8, 4, 4, generator=generator)
    prediction = torch.randn(4, 16, 4, 4, generator=generator).tanh()
    t = torch.tensor([0, 1, 500, 999])
    seen = []

    def model_fn(x_t, timesteps, scale):
        seen.append(timesteps)
        return prediction * scale

    terms = training_losses(model_fn, x_start, t, noise, schedule, scale=1.0)
    assert torch.equal(seen[0], t)
    assert all(terms[name].shape == (4,) for name in ("loss", "mse", "vb"))
    assert terms["pred_xstart"].shape == x_start.shape
    expected_mse = ((noise - prediction[:, :8]) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["mse"], expected_mse)
    assert torch.isfinite(terms["vb"]).all() and (terms["vb"] >= 0).all()
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])


def test_variational_bound_vanishes_for_a_perfect_model():
    schedule = make_schedule("")
    x_start = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    noise = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    t = torch.tensor([1, 300, 999])

    def perfect(x_t, timesteps):  # exact noise and v = -1, i.e. the true posterior variance
        return torch.cat([noise, -torch.ones_like(noise)], dim=1)

    terms = training_losses(perfect, x_start, t, noise, schedule)
    assert terms["mse"].abs().max() == 0
    assert terms["vb"].abs().max() < 1e-6


def test_a_perfect_v_model_has_zero_loss_and_recovers_x0():
    schedule = make_schedule("")
    x_start = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    noise = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    t = torch.tensor([1, 300, 999])
    abar = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    v = abar.sqrt() * noise - (1 - abar).sqrt() * x_start

    def perfect(x_t, timesteps):
        return torch.cat([v, -torch.ones_like(v)], dim=1)

    terms = training_losses(perfect, x_start, t, noise, schedule, prediction_type="v")
    assert terms["mse"].abs().max() == 0
    assert terms["vb"].abs().max() < 1e-6  # the bound sees the epsilon the v prediction implies
    torch.testing.assert_close(terms["pred_xstart"], x_start)
    # The MSE is taken on v: an error δ in v costs mean(δ²), whatever the noise level.
    wrong = training_losses(
        lambda x_t, ts: torch.cat([v + 0.5, -torch.ones_like(v)], dim=1),
        x_start,
        t,
        noise,
        schedule,
        prediction_type="v",
    )
    torch.testing.assert_close(wrong["mse"], torch.full((3,), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="prediction_type"):
        training_losses(perfect, x_start, t, noise, schedule, prediction_type="x0")


def test_v_and_epsilon_conversions_agree_with_q_sample():
    schedule = make_schedule("")
    generator = torch.Generator().manual_seed(1)
    x_start, noise = (
        torch.randn(2, 3, 2, 2, generator=generator),
        torch.randn(2, 3, 2, 2, generator=generator),
    )
    t = torch.tensor([10, 700])
    x_t = q_sample(x_start, t, noise, schedule)
    abar = schedule.alphas_cumprod[t]
    torch.testing.assert_close(epsilon_from_v(v_target(x_start, noise, abar), x_t, abar), noise)


def test_dit_config_rejects_an_unknown_prediction_type():
    with pytest.raises(ValueError, match="prediction_type"):
        dit_config("tiny").__class__(prediction_type="sample")


def test_denoiser_of_a_v_model_returns_the_epsilon_of_its_guided_v(tiny_model, io):
    """Guidance is affine with weights summing to 1, so guiding v and converting equals guiding ε."""
    import dataclasses

    v_model = DiT(dataclasses.replace(tiny_model.config, prediction_type="v"))
    v_model.load_state_dict(tiny_model.state_dict())
    x, t = io["cfg_x_noisy"], io["t"]
    with torch.no_grad():
        arguments = (io["cfg_source"], io["context_prompts"], io["context_empty"], 2.5, 1.0)
        guided_v = DualGuidanceDenoiser(tiny_model.eval(), *arguments)(
            x, t
        )  # same weights read as ε: the raw v
        eps = DualGuidanceDenoiser(v_model.eval(), *arguments)(x, t)
    channels = x.shape[1]
    abar = make_schedule("").alphas_cumprod[t].float()
    torch.testing.assert_close(eps[:, :channels], epsilon_from_v(guided_v[:, :channels], x, abar))
    torch.testing.assert_close(eps[:, channels:], guided_v[:, channels:])


def test_learned_range_interpolates_between_posterior_and_beta():
    schedule = make_schedule("")
    index = torch.tensor([10, 10])
    values = torch.tensor([-1.0, 1.0], dtype=torch.float64).reshape(2, 1)
    log_variance = learned_range_log_variance(values, index, schedule)
    torch.testing.assert_close(log_variance[0, 0], schedule.posterior_log_variance_clipped[10])
    torch.testing.assert_close(log_variance[1, 0], schedule.betas[10].log())


def test_vb_term_trains_only_the_variance_channels():
    schedule = make_schedule("")
    eps = torch.randn(2, 8, 4, 4, requires_grad=True)
    variance_values = torch.zeros(2, 8, 4, 4, requires_grad=True)
    terms = training_losses(
        lambda x_t, timesteps: torch.cat([eps, variance_values], dim=1),
        torch.randn(2, 8, 4, 4),
        torch.tensor([3, 700]),
        torch.randn(2, 8, 4, 4),
        schedule,
    )
    eps_grad, variance_grad = torch.autograd.grad(
        terms["vb"].sum(), [eps, variance_values], materialize_grads=True
    )
    assert eps_grad.abs().sum() == 0 and variance_grad.abs().sum() > 0
    eps_grad, variance_grad = torch.autograd.grad(
        terms["mse"].sum(), [eps, variance_values], materialize_grads=True
    )
    assert eps_grad.abs().sum() > 0 and variance_grad.abs().sum() == 0


def test_training_step_on_the_dit_reaches_every_used_parameter(io):
    model = DiT(dit_config("tiny"))
    model.initialize_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():  # leave the zero init so every weight gets a gradient
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    generator = torch.Generator().manual_seed(2)
    target = io["pipe_w"].repeat(2, 1, 1, 1)
    dropped = condition_dropout(
        torch.tensor([0.5, 0.07]), io["context_prompts"], io["context_empty"], io["cfg_source"]
    )
    y = label_dropout(torch.zeros(2, dtype=torch.int64), torch.tensor([0.5, 0.5]), null_label=1)

    def model_fn(x_t, timesteps):
        x = torch.cat([x_t, dropped.source_latent], dim=1)
        return model(x, timesteps, y, dropped.context, io["idfeatures"], dropped.identity_keep)

    noise = torch.randn(target.shape, generator=generator)
    terms = training_losses(model_fn, target, torch.tensor([0, 640]), noise, make_schedule(""))
    terms["loss"].mean().backward()
    unused = ("attr_embedder", "camera_embedder", "clipfeatures_embedder")
    for name, parameter in model.named_parameters():
        if name.startswith(unused):
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
            assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("r", "text_dropped", "image_dropped"),
    [
        (0.01, True, False),
        (0.049, True, False),
        (0.05, True, True),
        (0.09, True, True),
        (0.10, False, True),
        (0.149, False, True),
        (0.15, False, False),
        (0.9, False, False),
    ],
)
def test_condition_dropout_bands(io, r, text_dropped, image_dropped):
    context = io["context_prompts"][:1]
    source = io["cfg_source"][:1]
    dropped = condition_dropout(torch.tensor([r]), context, io["context_empty"], source)
    assert torch.equal(dropped.context[0], io["context_empty"] if text_dropped else context[0])
    assert torch.equal(dropped.source_latent, torch.zeros_like(source) if image_dropped else source)
    assert dropped.identity_keep.tolist() == [0.0 if image_dropped else 1.0]


def test_dropout_draws_give_the_official_rates():
    r = dropout_draws(200_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r, dropout_draws(200_000, generator=torch.Generator().manual_seed(0)))
    context = torch.zeros(r.shape[0], 1, 1)
    dropped = condition_dropout(r, context, torch.ones(1, 1), torch.ones(r.shape[0], 1, 1, 1))
    text = dropped.context.flatten() == 1
    image = dropped.identity_keep == 0
    for fraction in (
        (text & ~image).float().mean(),
        (text & image).float().mean(),
        (~text & image).float().mean(),
    ):
        assert math.isclose(fraction.item(), 0.05, abs_tol=0.003)


def test_label_dropout():
    labels = torch.zeros(3, dtype=torch.int64)
    assert label_dropout(labels, torch.tensor([0.05, 0.1, 0.5]), null_label=1).tolist() == [1, 0, 0]


def test_decode_timesteps_are_those_the_loop_shows_the_model(ddim50):
    assert decode_timesteps(0.3, ddim50) == list(range(280, -1, -20))
    assert decode_timesteps(0.3, ddim50, start_offset=0) == list(range(300, -1, -20))


@pytest.mark.parametrize("with_identity", [True, False])
def test_precomputed_conditioning_gives_the_official_edit(tiny_model, io, ddim50, with_identity):
    """adaLN modulations of all 15 steps computed up front: same trajectory as the plain loop."""
    source = pack_latent(io["pipe_codes"])
    identity = io["idfeatures"][:1] if with_identity else None
    timesteps = decode_timesteps(0.3, ddim50)
    with torch.no_grad():
        plain = DualGuidanceDenoiser(
            tiny_model, source, io["context_prompts"][:1], io["context_empty"], 2.5, 1.0, identity=identity
        )
        cached = DualGuidanceDenoiser(
            tiny_model,
            source,
            io["context_prompts"][:1],
            io["context_empty"],
            2.5,
            1.0,
            identity=identity,
            timesteps=timesteps,
        )
        assert sorted(cached.conditioning_by_timestep) == sorted(timesteps)
        expected = partial_ddim_decode(plain, source, 0.3, ddim50, noise=io["pipe_noise"])
        result = partial_ddim_decode(cached, source, 0.3, ddim50, noise=io["pipe_noise"])
    assert max_error(result.trajectory, expected.trajectory) < 1e-5
    if not with_identity:
        assert max_error(result.final, io["pipe_final"]) < TOLERANCE
