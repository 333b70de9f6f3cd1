"""Text side: tokenizer ids, token position randomization and the text encoder vs the official fixtures."""

import json
import logging

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file

from ip2n.text import (
    CONTEXT_LENGTH,
    DIT_CHECKPOINT_PREFIX,
    END_OF_TEXT,
    START_OF_TEXT,
    PromptEncoder,
    TextEncoder,
    TextEncoderConfig,
    count_tokens,
    cut_text,
    randomize_token_positions,
    text_encoder_config,
    text_state_dict_from,
    tokenize,
)

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tokens_fixture(fixtures_dir):
    return json.loads((fixtures_dir / "tokens" / "tokenize.json").read_text())


@pytest.fixture(scope="module")
def tiny_state_dict(fixtures_dir):
    return load_file(fixtures_dir / "tokens" / "text_encoder_tiny_state_dict.safetensors")


@pytest.fixture(scope="module")
def tiny_io(fixtures_dir):
    return load_file(fixtures_dir / "tokens" / "text_encoder_tiny_io.safetensors")


@pytest.fixture(scope="module")
def tiny_encoder(tiny_state_dict):
    return TextEncoder.from_state_dict(tiny_state_dict, text_encoder_config("tiny"))


def _max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual - expected).abs().max().item()


# --- tokenization -------------------------------------------------------------------------------


def test_tokenize_matches_official_ids(tokens_fixture):
    assert torch.equal(tokenize(tokens_fixture["texts"]), torch.tensor(tokens_fixture["tokens"]))
    extra = tokenize(tokens_fixture["extra_texts"])  # "", a word-final "!", an over-long text
    assert extra.dtype == torch.int64 and extra.shape == (3, CONTEXT_LENGTH)
    assert torch.equal(extra, torch.tensor(tokens_fixture["extra_tokens"]))
    assert extra[2, -1].item() == END_OF_TEXT


def test_truncation_is_reported(tokens_fixture, caplog):
    short, long = tokens_fixture["texts"][0], tokens_fixture["extra_texts"][2]
    assert count_tokens("") == 2
    assert count_tokens(short) == int((tokenize(short) != 0).sum())
    assert count_tokens(long) > CONTEXT_LENGTH
    assert cut_text(short) == ""
    dropped = cut_text(long)
    assert dropped.endswith("old") and long.endswith(dropped)
    # What is kept plus what is cut is the whole prompt (75 text tokens fit between SOT and EOT).
    assert len(dropped.split()) == count_tokens(long) - CONTEXT_LENGTH
    with caplog.at_level(logging.WARNING, logger="ip2n.text.tokens"):
        tokenize([short, long])
    assert len(caplog.records) == 1 and dropped in caplog.records[0].getMessage()


# --- token position randomization ---------------------------------------------------------------


def test_official_draws_come_from_numpy_legacy_rng(tokens_fixture):
    tpr = tokens_fixture["tpr"]
    rng = np.random.RandomState(tpr["example_seed"])
    draws = [rng.randint(0, 25) for _ in tpr["example_texts"]]  # one draw per row, in row order
    assert draws == tpr["example_randint_draws"]


def test_tpr_replays_official_shifts(tokens_fixture, tiny_io):
    tpr = tokens_fixture["tpr"]
    tokens = tokenize(tpr["example_texts"])
    shifted = randomize_token_positions(tokens, training=True, offsets=tpr["example_randint_draws"])
    assert torch.equal(shifted, torch.tensor(tpr["example_tokens_after_tpr"]))
    assert torch.equal(shifted, tiny_io["tokens_tpr"])
    start = (shifted == START_OF_TEXT).int().argmax(dim=1)
    assert start.tolist() == tpr["example_offsets_applied"]  # the over-long row cannot move


def test_tpr_is_off_unless_asked():
    tokens = tokenize(["add bangs", ""])
    assert randomize_token_positions(tokens, training=False) is tokens
    assert not torch.equal(
        randomize_token_positions(tokens, training=False, at_inference=True, offsets=[3, 5]), tokens
    )
    with pytest.raises(ValueError, match="TPR is off"):
        randomize_token_positions(tokens, training=False, offsets=[3, 5])


def test_tpr_random_offsets_keep_each_prompt_whole():
    tokens = tokenize(
        ["make him smile!!", "", "Put eyeglasses on his face, add some bangs and give him a goatee"] * 20
    )
    shifted = randomize_token_positions(tokens, training=True, generator=torch.Generator().manual_seed(0))
    again = randomize_token_positions(tokens, training=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shifted, again)
    used = (tokens != 0).cumsum(1).argmax(1) + 1  # prompt lengths
    start = (shifted == START_OF_TEXT).int().argmax(dim=1)
    assert start.min() >= 0 and start.max() <= 24 and len(set(start.tolist())) >= 20
    for row, (offset, length) in enumerate(zip(start.tolist(), used.tolist())):
        assert torch.equal(shifted[row, offset : offset + length], tokens[row, :length])
        assert int((shifted[row] != 0).sum()) == int((tokens[row] != 0).sum())  # "!!" keeps its mid-prompt 0
    capped = randomize_token_positions(
        tokens, training=True, max_offset=3, generator=torch.Generator().manual_seed(1)
    )
    assert (capped == START_OF_TEXT).int().argmax(dim=1).max() <= 2


# --- text encoder -------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens_name, output_name", [("tokens_plain", "z_plain"), ("tokens_tpr", "z_tpr")])
def test_tiny_encoder_matches_official(tiny_encoder, tiny_io, tokens_name, output_name):
    with torch.no_grad():
        output = tiny_encoder(tiny_io[tokens_name])
    assert output.shape == tiny_io[output_name].shape == (8, CONTEXT_LENGTH, 8)
    assert _max_error(output, tiny_io[output_name]) <= TOLERANCE


def test_tiny_fixture_tokens_are_our_tokens(tokens_fixture, tiny_io):
    assert torch.equal(tiny_io["tokens_plain"], tokenize(tokens_fixture["tpr"]["example_texts"]))


def _tiny_open_clip_model(tiny_state_dict):
    """The fixture's open_clip CLIP (vision tower included), holding the fixture's text weights."""
    config = text_encoder_config("tiny")
    model = open_clip.CLIP(
        embed_dim=8,
        vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=8, head_width=4, patch_size=16, image_size=32),
        text_cfg=open_clip.CLIPTextCfg(
            context_length=config.context_length,
            vocab_size=config.vocab_size,
            width=config.width,
            heads=config.heads,
            layers=config.layers,
        ),
    )
    missing, unexpected = model.load_state_dict(tiny_state_dict, strict=False)
    assert not unexpected and all(key.startswith("visual.") for key in missing)
    return model


@pytest.mark.parametrize("source", ["open_clip", "dit_checkpoint"])
def test_weight_sources(tiny_state_dict, tiny_io, source):
    state_dict = _tiny_open_clip_model(tiny_state_dict).state_dict()
    if source == "dit_checkpoint":
        state_dict = {DIT_CHECKPOINT_PREFIX + key: value for key, value in state_dict.items()}
        state_dict["x_embedder.proj.weight"] = torch.zeros(64, 1024, 1, 1)  # DiT entries are left alone
    weights = text_state_dict_from(state_dict, text_encoder_config("tiny"))
    assert not any(
        key.startswith(("visual.", "text_projection", "logit_scale", "transformer.resblocks.2."))
        for key in weights
    )
    encoder = TextEncoder.from_state_dict(state_dict, text_encoder_config("tiny"))
    with torch.no_grad():
        assert _max_error(encoder(tiny_io["tokens_plain"]), tiny_io["z_plain"]) <= TOLERANCE


def test_weight_errors_name_the_keys(tiny_state_dict):
    config = text_encoder_config("tiny")
    broken = dict(tiny_state_dict)
    del broken["ln_final.weight"]
    broken["transformer.resblocks.0.attn.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \(1\): ln_final.weight[\s\S]*unexpected \(1\)"):
        text_state_dict_from(broken, config)
    with pytest.raises(ValueError, match="wrong shape"):
        text_state_dict_from(tiny_state_dict, TextEncoderConfig(width=16, heads=2, layers=3))
    with pytest.raises(ValueError, match="no OpenCLIP text-encoder weights"):
        text_state_dict_from({"blocks.0.attn.qkv.weight": torch.zeros(3, 1)}, config)


def test_vit_h14_keys_match_official_manifest(fixtures_dir):
    manifest = json.loads((fixtures_dir / "manifests" / "openclip_vit_h14.json").read_text())
    state_dict = {
        key: torch.empty(shape, device="meta") for key, (shape, _) in manifest["state_dict"].items()
    }
    config = text_encoder_config("ViT-H-14")
    expected = TextEncoder(config, device="meta").state_dict()
    weights = text_state_dict_from(state_dict, config)
    assert {key: tuple(value.shape) for key, value in weights.items()} == {
        key: tuple(value.shape) for key, value in expected.items()
    }
    text_keys = {key[len(DIT_CHECKPOINT_PREFIX) :] for key in state_dict} - set(weights)
    text_keys = {key for key in text_keys if not key.startswith("visual.")}
    assert text_keys == {"text_projection", "logit_scale"} | {
        key for key in text_keys if key.startswith("transformer.resblocks.23.")
    }
    assert len(text_keys) == 2 + 12  # the 24th block (never run) has 12 tensors


def test_vit_h14_preset_is_open_clip_config():
    text_cfg = open_clip.get_model_config("ViT-H-14")["text_cfg"]
    config = text_encoder_config("ViT-H-14")
    assert (config.width, config.heads, config.layers, config.context_length, config.vocab_size) == (
        text_cfg["width"],
        text_cfg["heads"],
        text_cfg["layers"],
        text_cfg["context_length"],
        text_cfg["vocab_size"],
    )
    assert config.blocks_run == 23
    encoder = TextEncoder(config, device="meta")
    assert len(encoder.transformer.resblocks) == 23
    assert sum(p.numel() for p in encoder.parameters()) == 340_387_840  # text tower without block 23


def test_encoder_rejects_wrong_token_shape(tiny_encoder):
    # A prefix of the window (up to 77 ids) is accepted: causal attention makes it exact (training uses it).
    for tokens in (
        torch.zeros(2, 78, dtype=torch.int64),
        torch.zeros(2, 0, dtype=torch.int64),
        torch.zeros(77, dtype=torch.int64),
    ):
        with pytest.raises(ValueError, match="expected token ids"):
            tiny_encoder(tokens)


def test_tokenize_equals_open_clip_on_long_and_unusual_prompts():
    import open_clip

    prompts = ["a " * 100, "", "Put   GLASSES on her, please! ☃ é " * 6, "make him smile"]
    assert torch.equal(tokenize(prompts), open_clip.get_tokenizer("ViT-H-14")(prompts))


def test_reset_parameters_is_seeded():
    encoder = TextEncoder(text_encoder_config("small"))
    encoder.reset_parameters(torch.Generator().manual_seed(0))
    first = {key: value.clone() for key, value in encoder.state_dict().items()}
    encoder.reset_parameters(torch.Generator().manual_seed(0))
    assert all(torch.equal(first[key], value) for key, value in encoder.state_dict().items())
    with torch.no_grad():
        assert torch.isfinite(encoder(tokenize(["smile"]))).all()


# --- prompt cache -------------------------------------------------------------------------------


def test_prompt_encoder_encodes_each_prompt_once(tiny_encoder):
    rows_encoded = []
    handle = tiny_encoder.register_forward_hook(
        lambda module, args, output: rows_encoded.append(args[0].shape[0])
    )
    try:
        prompts = PromptEncoder(tiny_encoder, max_cached=2)
        first = prompts.encode_prompts(["add bangs", "", "Add  Bangs", "make him smile"])
        assert rows_encoded == [3]  # "Add  Bangs" tokenizes like "add bangs"
        second = prompts.encode_prompts(["", "make him smile", ""])
        assert rows_encoded == [3]
        prompts.encode_prompts(["a", "b", "c"])  # evicts the other prompts, never ""
        prompts.encode_prompts([""])
        assert rows_encoded == [3, 3]
    finally:
        handle.remove()
    with torch.no_grad():
        direct = tiny_encoder(tokenize(["add bangs", "", "add bangs", "make him smile"]))
    assert torch.equal(first, direct)
    assert torch.equal(second, direct[[1, 3, 1]])
    assert first.shape == (4, CONTEXT_LENGTH, 8)


def test_a_prompt_encodes_the_same_alone_or_in_a_batch(tiny_encoder):
    prompts = ["add bangs", "", "make him smile"]
    with torch.no_grad():
        batched = tiny_encoder(tokenize(prompts))
        alone = torch.cat([tiny_encoder(tokenize([prompt])) for prompt in prompts])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_vit_h14_encodes_prompts():
    encoder = TextEncoder(text_encoder_config("ViT-H-14"))
    encoder.reset_parameters(torch.Generator().manual_seed(0))
    context = PromptEncoder(encoder).encode_prompts(["add bangs to the hairstyle", ""])
    assert context.shape == (2, CONTEXT_LENGTH, 1024) and torch.isfinite(context).all()
