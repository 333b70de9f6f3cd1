"""The synthetic world's models and their training code: bank, classifier, text reader,
ArcFace head, latent triplets, ablation switches of the objective, the whole recipe at toy size."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ip2n.diffusion import pack_latent, unpack_latent
from ip2n.synthetic.lab.bank import HeadBank, render_bank
from ip2n.synthetic.lab.classifier import (
    NUM_LOGITS,
    AttributeClassifier,
    attribute_targets,
    classification_loss,
    predicted_targets,
    targets_to_attributes,
)
from ip2n.synthetic.lab.edit_data import build_edit_data
from ip2n.synthetic.lab.text_training import (
    EDIT_CLASSES,
    EditReader,
    TextTrainingConfig,
    edit_labels,
    train_text_encoder,
)
from ip2n.synthetic.lab.vision_training import ARCFACE_MARGIN, ARCFACE_SCALE, ArcFaceHead, true_codes
from ip2n.synthetic.world.attributes import ATTRIBUTE_NAMES, sample_attributes, sample_identity
from ip2n.synthetic.world.generator import prior_mean_coordinates
from ip2n.synthetic.world.instructions import phrasings
from ip2n.synthetic.world.latent import (
    attributes_of,
    coordinates_from,
    decode,
    encode,
    identity_of,
    row_bases,
)
from ip2n.text import TextEncoder, text_encoder_config, tokenize


def _random_coordinates(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    attributes = [sample_attributes(generator) for _ in range(n)]
    return coordinates_from(sample_identity(n, generator), attributes), attributes


@pytest.fixture(scope="module")
def bank():
    return render_bank(3, 2, seed=5, resolution=32, workers=1, progress=False)


def test_bank_views_share_identities_and_round_trip(bank, tmp_path):
    assert bank.images.shape == (6, 3, 32, 32) and bank.images.dtype == torch.uint8
    assert bank.identity_index.tolist() == [0, 0, 1, 1, 2, 2]
    identity = identity_of(bank.coordinates)
    # Views of one identity share its identity values and differ in pose (and mostly in attributes).
    assert torch.equal(identity[0], identity[1]) and not torch.equal(identity[0], identity[2])
    assert not torch.equal(bank.cameras[0], bank.cameras[1])
    assert -1 <= float(bank.pixels(slice(None)).min()) and float(bank.pixels(slice(None)).max()) <= 1
    loaded = HeadBank.load(bank.save(tmp_path / "bank.safetensors"))
    assert HeadBank.views_in(tmp_path / "bank.safetensors") == 6  # read from the header alone
    assert all(torch.equal(getattr(loaded, f.name), getattr(bank, f.name)) for f in dataclasses.fields(bank))
    # Each view comes from its own seed: rendering a prefix of the bank gives the same views.
    prefix = render_bank(1, 2, seed=5, resolution=32, workers=1, progress=False)
    assert torch.equal(prefix.images, bank.images[:2])


def test_a_second_view_set_shows_the_same_people_anew(bank):
    extra = render_bank(2, 3, seed=5, resolution=32, workers=1, view_set=1, progress=False)
    assert extra.identity_index.tolist() == [0, 0, 0, 1, 1, 1]
    # The bank's first two identities, with other attributes and poses.
    assert torch.equal(identity_of(extra.coordinates)[::3], identity_of(bank.coordinates)[:4:2])
    assert not torch.equal(extra.coordinates[:2], bank.coordinates[:2]) and not torch.equal(
        extra.cameras[:2], bank.cameras[:2]
    )
    joined = bank.joined(extra)
    assert len(joined) == 12 and torch.equal(joined.images[6:], extra.images)
    assert joined.identity_index.tolist() == [0, 0, 1, 1, 2, 2, 0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="view_set must be one of"):
        render_bank(1, 1, seed=5, view_set=2, progress=False)
    with pytest.raises(ValueError, match="cannot join banks of"):
        bank.joined(render_bank(1, 1, seed=5, resolution=16, workers=1, progress=False))


def test_out_of_fold_inversions_come_from_encoders_that_never_saw_the_identity(bank, monkeypatch):
    from ip2n.synthetic.lab import vision_training
    from ip2n.synthetic.lab.vision_training import (
        VisionTrainingConfig,
        fold_encoder_steps,
        invert_held_out_fold,
    )

    assert [fold_encoder_steps(1000, folds) for folds in (2, 3, 4)] == [500, 667, 750]
    assert fold_encoder_steps(1, 2) == 1
    odd = bank.select(bank.identity_index % 2 == 1)
    assert odd.identity_index.tolist() == [1, 1] and torch.equal(odd.images, bank.images[2:4])

    seen, train_encoder = [], vision_training.train_encoder

    def spy(training_bank, *args, **kwargs):
        seen.append(training_bank.identity_index.tolist())
        return train_encoder(training_bank, *args, **kwargs)

    monkeypatch.setattr(vision_training, "train_encoder", spy)
    codes = {fold: invert_held_out_fold(bank, fold, 2, VisionTrainingConfig(2), w_dim=8) for fold in (0, 1)}
    assert seen == [[1, 1], [0, 0, 2, 2]]  # fold 0 holds identities 0 and 2, fold 1 identity 1
    assert codes[0].shape == (4, 14, 8) and codes[1].shape == (2, 14, 8)
    assert bool(torch.isfinite(codes[0]).all()) and not torch.equal(codes[0][0], codes[0][1])


def test_attribute_targets_round_trip_and_loss():
    coordinates, attributes = _random_coordinates(16)
    targets = attribute_targets(coordinates)
    assert targets_to_attributes(targets) == attributes_of(coordinates) == attributes
    # Logits that put a large margin on the truth give the truth back and almost no loss.
    logits = torch.full((16, NUM_LOGITS), -20.0)
    start = 0
    for column, size in enumerate([1] * 12 + [7, 2, 4]):
        if size == 1:
            logits[:, start] = 20.0 * (2 * targets[:, column] - 1)
        else:
            logits[torch.arange(16), start + targets[:, column]] = 20.0
        start += size
    assert torch.equal(predicted_targets(logits), targets)
    assert float(classification_loss(logits, targets)) < 1e-6
    assert AttributeClassifier()(torch.zeros(2, 3, 48, 48)).shape == (2, NUM_LOGITS)  # any size is pooled


def test_true_codes_are_offsets_from_the_prior_mean(bank):
    codes = true_codes(bank, 64)
    bases = row_bases(64)
    absolute = codes + encode(prior_mean_coordinates(), bases)
    assert torch.allclose(decode(absolute, bases), bank.coordinates, atol=1e-5)


def test_arcface_margin_only_lowers_the_true_class():
    head = ArcFaceHead(8, 5, torch.Generator().manual_seed(0))
    features, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    logits = head(features, labels)
    cosine = (
        torch.nn.functional.normalize(features, dim=1) @ torch.nn.functional.normalize(head.weight, dim=1).T
    )
    expected = ARCFACE_SCALE * cosine
    true = cosine[torch.arange(4), labels]
    expected[torch.arange(4), labels] = ARCFACE_SCALE * torch.cos(torch.acos(true) + ARCFACE_MARGIN)
    assert torch.allclose(logits, expected, atol=1e-4)


def test_text_encoder_prefix_equals_the_full_window():
    encoder = TextEncoder(text_encoder_config("tiny"), device="cpu")
    encoder.reset_parameters(torch.Generator().manual_seed(0))
    tokens = tokenize(["give him glasses and make him smile", "dye her hair blue"])
    full, prefix = encoder(tokens), encoder(tokens[:, :12])
    assert torch.allclose(full[:, :12], prefix, atol=1e-6)


def test_edit_labels_and_a_short_text_training_run():
    labels = edit_labels({"eyeglasses": False, "hair_color": "blue"})
    assert len(labels) == len(ATTRIBUTE_NAMES)
    assert labels[ATTRIBUTE_NAMES.index("eyeglasses")] == 2  # class 0 = untouched, 1 = True, 2 = False
    assert labels[ATTRIBUTE_NAMES.index("hair_color")] == 1 + EDIT_CLASSES["hair_color"].index("blue")
    assert labels[ATTRIBUTE_NAMES.index("smile")] == 0
    config = TextTrainingConfig(steps=100, batch_size=16, pool_size=256, learning_rate=3e-3)
    encoder, reader, history = train_text_encoder(config, progress=False)
    assert isinstance(reader, EditReader) and history[-1][1] < history[0][1]
    assert not encoder.token_embedding.sparse  # back to the inference layout
    assert encoder(tokenize(["smile"])).shape == (1, 77, 64)


def test_latent_triplets_apply_exactly_the_requested_edit():
    coordinates, attributes = _random_coordinates(5, seed=3)
    bases = row_bases(64)
    average = encode(prior_mean_coordinates(), bases)
    codes = encode(coordinates, bases) - average + 0.01 * torch.randn(5, 14, 64)  # an imperfect encoder
    identity = torch.nn.functional.normalize(torch.randn(5, 512), dim=1)
    data = build_edit_data(coordinates, codes, identity, 24, seed=1, progress=False)
    assert len(data) == 24 and data.latent_shape == (64, 4, 4)
    batch = data.batch(list(range(24)), torch.device("cpu"))
    assert batch.source_latent.shape == batch.edited_latent.shape == (24, 64, 4, 4)
    assert torch.equal(batch.source_identity, identity[data.rows]) and torch.equal(
        batch.edited_identity, batch.source_identity
    )
    for sample in range(24):
        source = attributes[int(data.rows[sample])]
        edited = attributes_of(
            decode(unpack_latent(batch.edited_latent[sample : sample + 1]) + average, bases)
        )[0]
        changed = {name for name in ATTRIBUTE_NAMES if edited[name] != source[name]}
        assert 1 <= len(changed) <= 3
        # Identity values are left exactly as the encoder had them.
        change = decode(
            unpack_latent(
                batch.edited_latent[sample : sample + 1] - batch.source_latent[sample : sample + 1]
            ),
            bases,
        )
        assert float(identity_of(change).abs().max()) < 1e-5
    single = [i for i, text in enumerate(data.instructions) if " and " not in text and "," not in text]
    heldout = set().union(
        *(phrasings(name, value, "heldout") for name in ("eyeglasses", "smile") for value in (True, False))
    )
    assert not heldout & set(data.instructions)
    assert single  # some one-edit sentences
    grid_rows = data.sample_set(2, seed=0, device=torch.device("cpu"))
    assert grid_rows.source_latent.shape == (2, 64, 4, 4) and len(grid_rows.instructions) == 2


def test_recombined_sources_keep_the_inversion_error_on_a_new_head():
    coordinates, attributes = _random_coordinates(6, seed=5)
    bases = row_bases(64)
    average = encode(prior_mean_coordinates(), bases)
    error = 0.05 * torch.randn(
        6, 14, 64, generator=torch.Generator().manual_seed(0)
    )  # the encoder's error per view
    codes = encode(coordinates, bases) - average + error
    identity = torch.nn.functional.normalize(torch.randn(6, 512), dim=1)
    plain = build_edit_data(coordinates, codes, identity, 40, seed=3, progress=False)
    data = build_edit_data(coordinates, codes, identity, 40, seed=3, recombined_fraction=0.5, progress=False)
    assert not plain.recombined.any() and not plain.source_shifts.any()
    assert 10 <= int(data.recombined.sum()) <= 30
    batch = data.batch(list(range(40)), torch.device("cpu"))
    for sample in range(40):
        row = int(data.rows[sample])
        source = unpack_latent(batch.source_latent[sample : sample + 1]) + average
        true_source = source - error[row]  # what the recombined head is, without the inversion error
        truth = decode(true_source, bases)
        if data.recombined[sample]:
            # a new person (identity values moved), the same inversion error, no identity-loss target
            assert float((identity_of(truth) - identity_of(coordinates[row][None])).abs().max()) > 0.1
            assert not batch.edited_identity[sample].any()
        else:
            assert torch.allclose(truth, coordinates[row][None], atol=1e-5)
            assert torch.equal(batch.edited_identity[sample], identity[row])
        assert torch.equal(batch.source_identity[sample], identity[row])  # the condition: the rendered view's
        # the edit is still exactly the requested change of the (recombined) source's attributes
        source_attributes = attributes_of(truth)[0]
        edited = attributes_of(
            decode(unpack_latent(batch.edited_latent[sample : sample + 1]) + average - error[row], bases)
        )[0]
        assert 1 <= sum(edited[name] != source_attributes[name] for name in ATTRIBUTE_NAMES) <= 3
    with pytest.raises(ValueError, match="recombined_fraction must be between 0 and 1"):
        build_edit_data(coordinates, codes, identity, 4, seed=3, recombined_fraction=1.5, progress=False)


def test_true_targets_edit_the_true_head_not_the_inversion():
    coordinates, attributes = _random_coordinates(6, seed=6)
    bases = row_bases(64)
    average = encode(prior_mean_coordinates(), bases)
    truth = encode(coordinates, bases) - average
    error = 0.05 * torch.randn(
        6, 14, 64, generator=torch.Generator().manual_seed(1)
    )  # the encoder's error per view
    identity = torch.nn.functional.normalize(torch.randn(6, 512), dim=1)
    plain = build_edit_data(coordinates, truth + error, identity, 30, seed=3, progress=False)
    data = build_edit_data(
        coordinates, truth + error, identity, 30, seed=3, target_codes=truth, progress=False
    )
    assert torch.equal(data.rows, plain.rows) and data.instructions == plain.instructions  # the same triplets
    batch, plain_batch = (
        data.batch(list(range(30)), torch.device("cpu")),
        plain.batch(list(range(30)), torch.device("cpu")),
    )
    assert torch.equal(batch.source_latent, plain_batch.source_latent)  # the source is still the inversion
    for sample in range(30):
        row = int(data.rows[sample])
        edited = decode(unpack_latent(batch.edited_latent[sample : sample + 1]) + average, bases)
        # the target is the true head, edited: the inversion's error is gone, identity values exact
        assert torch.allclose(identity_of(edited), identity_of(coordinates[row][None]), atol=1e-5)
        assert torch.allclose(
            batch.edited_latent[sample] - plain_batch.edited_latent[sample],
            -pack_latent(error[row][None])[0],
            atol=1e-5,
        )
        changed = {
            name for name in ATTRIBUTE_NAMES if attributes_of(edited)[0][name] != attributes[row][name]
        }
        assert 1 <= len(changed) <= 3
    with pytest.raises(ValueError, match=r"target_codes must have the shape of source_codes \(6, 14, 64\)"):
        build_edit_data(coordinates, truth, identity, 4, seed=3, target_codes=truth[:, :8], progress=False)


def test_each_ablation_variant_turns_off_what_its_name_says(tmp_path):
    from ip2n.synthetic.lab.train_all import VARIANTS, WorldTrainingConfig, dit_training_config

    config = WorldTrainingConfig.quick()
    objectives = {variant: dit_training_config(variant, config, tmp_path).objective for variant in VARIANTS}
    assert {v for v, o in objectives.items() if not o.token_position_randomization} == {
        "no_tpr",
        "single_edit_no_tpr",
    }
    without_identity = {"no_identity", "true_targets_no_identity"}
    assert {v for v, o in objectives.items() if not o.identity_conditioning} == without_identity
    assert {v for v, o in objectives.items() if o.identity_weight == 0} == without_identity
    assert {v for v, o in objectives.items() if not o.source_conditioning} == {"img2img"}
    with pytest.raises(ValueError, match="unknown variant 'no_text'"):
        dit_training_config("no_text", config, tmp_path)


def test_single_edit_triplets_hold_one_instruction_each():
    from ip2n.synthetic.lab.train_all import SINGLE_EDIT_COUNT_PROBABILITIES

    coordinates, attributes = _random_coordinates(5, seed=4)
    codes = encode(coordinates, row_bases(64))
    identity = torch.nn.functional.normalize(torch.randn(5, 512), dim=1)
    data = build_edit_data(
        coordinates,
        codes,
        identity,
        16,
        seed=2,
        progress=False,
        count_probabilities=SINGLE_EDIT_COUNT_PROBABILITIES,
    )
    for sample in range(16):
        edited = attributes_of(coordinates[int(data.rows[sample])][None] + data.coordinate_deltas[sample])[0]
        source = attributes[int(data.rows[sample])]
        assert sum(edited[name] != source[name] for name in ATTRIBUTE_NAMES) == 1


class _SpyDiT(torch.nn.Module):
    """Records what the objective feeds the DiT; predicts zeros (epsilon ‖ variance channels)."""

    class config:  # noqa: N801 (mimics DiT.config)
        num_classes = 1
        latent_scale = 1.0
        prediction_type = "epsilon"

    def forward(self, x, t, y, context, identity, identity_keep):
        self.inputs, self.identity_keep = x, identity_keep
        return torch.zeros_like(x)


@pytest.mark.parametrize("switch", ["source_conditioning", "identity_conditioning"])
def test_ablation_switches_of_the_objective(switch):
    from ip2n.diffusion import make_schedule
    from ip2n.training.config import ObjectiveConfig
    from ip2n.training.models import FrozenNetworks
    from ip2n.training.objective import Batch, batch_losses, draw

    text = TextEncoder(text_encoder_config("tiny"), device="cpu")
    text.reset_parameters(torch.Generator().manual_seed(0))
    networks = FrozenNetworks(text, None, 64, None, None, torch.zeros(1, 14, 8))
    source = torch.randn(6, 8, 4, 4)
    batch = Batch(
        source, torch.randn(6, 8, 4, 4), torch.randn(6, 512), torch.randn(6, 512), tokenize(["smile"] * 6)
    )
    draws = draw(6, (8, 4, 4), 1000, torch.Generator().manual_seed(0))
    draws = dataclasses.replace(draws, dropout=torch.full((6,), 0.99))  # no condition is dropped by chance
    spy = _SpyDiT()
    batch_losses(spy, batch, draws, networks, make_schedule(), ObjectiveConfig(identity_weight=0.0))
    assert torch.equal(spy.inputs[:, 8:], source) and bool((spy.identity_keep == 1).all())
    batch_losses(
        spy, batch, draws, networks, make_schedule(), ObjectiveConfig(identity_weight=0.0, **{switch: False})
    )
    if switch == "source_conditioning":  # img2img: the source never reaches the model
        assert bool((spy.inputs[:, 8:] == 0).all()) and bool((spy.identity_keep == 1).all())
    else:
        assert torch.equal(spy.inputs[:, 8:], source) and bool((spy.identity_keep == 0).all())


def test_someone_elses_instructions_are_read_and_checked(tmp_path):
    from ip2n.synthetic.lab.evaluate import read_instruction_cases
    from ip2n.synthetic.world.attributes import visible_changes

    good = tmp_path / "mine.jsonl"
    good.write_text(
        '{"instruction": "shave his head", "edits": {"bald": true}}\n\n'
        '{"instruction": "make her a blonde with specs", '
        '"edits": {"hair_color": "blond", "eyeglasses": true}}\n'
    )
    cases = read_instruction_cases(good, seed=0)
    assert [case.instruction for case in cases] == ["shave his head", "make her a blonde with specs"]
    for case in cases:  # every requested edit shows on the head it is applied to
        assert visible_changes(case.source, case.target) == case.edits
    for line, message in [
        ('{"instruction": "x", "edits": {"wings": true}}', "line 1: unknown attribute 'wings'"),
        ('{"instruction": "x", "edits": {"hair_color": "green"}}', "hair_color takes one of black, brown"),
        ('{"instruction": "x", "edits": {"smile": "yes"}}', "smile takes true or false"),
        ('{"instruction": "", "edits": {"smile": true}}', "must be non-empty"),
        ("not json", "expected"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(line + "\n")
        with pytest.raises(ValueError, match=message):
            read_instruction_cases(bad, seed=0)


def test_evaluation_figures_are_computed_per_count():
    from ip2n.synthetic.lab.evaluate import CaseResult, summarize

    def case(count, success, changed, misread=0):
        return CaseResult(
            count,
            success,
            not success,
            changed,
            10,
            3 if success else 1,
            4,
            exact_success_classifier=count == 1,
            exact_altered_views=4 if success else 2,
            dependency=0.02,
            identity_cosine=0.9,
            input_identity_cosine=0.6 if success else 0.5,
            exact_edit_identity_cosine=0.8 if success else 0.7,
            identity_drift=0.03 * count,
            identity_error=0.2 if success else 0.4,
            reconstruction_identity_error=0.3,
            reconstruction_error=0.01,
            reconstruction_attributes=1.0,
            changed_others_reconstruction=changed - misread,
            misread_others=misread,
        )

    summary = summarize([case(1, True, 0), case(1, False, 1), case(2, True, 2, misread=2)])
    assert (
        summary["by_count"]["1"]["success_truth"] == 0.5 and summary["by_count"]["2"]["success_truth"] == 1.0
    )
    assert summary["all"]["other_attributes_changed_truth"] == pytest.approx(3 / 30)
    assert summary["all"]["other_attributes_changed_reconstruction"] == pytest.approx(1 / 30)
    assert summary["by_count"]["2"]["other_attributes_misread_by_encoder"] == pytest.approx(2 / 10)
    assert summary["all"]["AA"] == pytest.approx(7 / 12)
    assert summary["all"]["AD_percent"] == pytest.approx(2.0)
    assert summary["all"]["exact_edit_identity_cosine"] == pytest.approx(2.3 / 3)
    assert summary["all"]["input_identity_cosine"] == pytest.approx(1.7 / 3)
    assert summary["by_count"]["1"]["exact_success_classifier"] == 1.0
    assert summary["by_count"]["2"]["exact_success_classifier"] == 0.0
    assert summary["all"]["exact_AA"] == pytest.approx(10 / 12)
    assert summary["by_count"]["1"]["identity_drift_truth"] == pytest.approx(0.03)
    assert summary["by_count"]["1"]["identity_error_truth"] == pytest.approx(0.3)
    assert summary["all"]["reconstruction_identity_error_truth"] == pytest.approx(0.3)


def test_paired_differences_and_the_sign_test():
    from ip2n.synthetic.lab.evaluate import paired_difference, sign_test

    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)  # P(≤ 1 of 10) on either side
    assert sign_test(1, 9) == sign_test(9, 1) and sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    baseline = [
        {"instruction": f"smile {i}", "edits": {"smile": True}, "identity_cosine": 0.8} for i in range(4)
    ]
    rows = [dict(row, identity_cosine=value) for row, value in zip(baseline, (0.9, 0.9, 0.8, 0.6))]
    assert paired_difference(rows, baseline, "identity_cosine") == {
        "mean_difference": pytest.approx(0.0),
        "higher": 2,
        "lower": 1,
        "cases": 4,
        "sign_test_p": 1.0,
    }
    with pytest.raises(ValueError, match="need two evaluations of the same cases"):
        paired_difference(rows[::-1], baseline, "identity_cosine")


def test_resuming_train_all_needs_the_same_settings(tmp_path):
    from ip2n.synthetic.lab.train_all import WorldTrainingConfig, check_resumable

    config = WorldTrainingConfig.quick()
    check_resumable(None, config, tmp_path)  # a new run
    check_resumable(
        {**dataclasses.asdict(config), "workers": 1}, config, tmp_path
    )  # how stages run, not what they make
    older = {
        key: value
        for key, value in dataclasses.asdict(config).items()
        if key != "text_position_randomization"
    }
    check_resumable(older, config, tmp_path)  # a setting older versions did not record had its default (on)
    with pytest.raises(ValueError, match="text_position_randomization True → False"):
        check_resumable(older, dataclasses.replace(config, text_position_randomization=False), tmp_path)
    # Runs from before the identity network's extra views had none (not today's default).
    older = {key: value for key, value in dataclasses.asdict(config).items() if key != "identity_extra_views"}
    check_resumable(older, dataclasses.replace(config, identity_extra_views=0), tmp_path)
    with pytest.raises(ValueError, match="identity_extra_views 0 → 1"):
        check_resumable(older, config, tmp_path)
    with pytest.raises(
        ValueError,
        match=r"holds a train-all run started with other settings \(dit_steps 3 → 4; seed 0 → 2\).*new --out",
    ):
        check_resumable(
            dataclasses.asdict(config), dataclasses.replace(config, dit_steps=4, seed=2), tmp_path
        )


# --- train-all end to end at toy size, then the evaluation on its output (system tier) ------------------

QUICK = ["--quick", "--threads", "1", "--no-text-tpr"]


def _ip2n(*args) -> subprocess.CompletedProcess:
    """`ip2n ARGS` in a process of its own (its worker processes' progress bars reach its stderr)."""
    command = [sys.executable, "-m", "ip2n.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=3000)


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory) -> tuple[Path, str]:
    """The one command behind the built-in weights, at toy budgets: (its output folder, its stderr)."""
    out = tmp_path_factory.mktemp("toy") / "world"
    run = _ip2n("synth", "train-all", "--out", out, *QUICK)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run.stderr


@pytest.fixture(scope="module")
def toy_eval(toy_world, tmp_path_factory) -> Path:
    """`synth eval` on the toy world (one case for one and three instructions), with its loss diagnostic."""
    out = tmp_path_factory.mktemp("toy-eval")
    run = _ip2n(
        "synth",
        "eval",
        "--weights",
        toy_world[0],
        "--cases",
        1,
        "--counts",
        "1,3",
        "--out",
        out,
        "--threads",
        1,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.mark.system
def test_train_all_writes_every_model_and_shows_progress(toy_world):
    from ip2n.checkpoints.safetensors_io import load_weights
    from ip2n.synthetic.lab.train_all import SHIPPED_FILES, WorldTrainingConfig, load_attribute_classifier

    out, progress = toy_world
    # Every stage shows its progress, the worker processes' included.
    for bar in (
        "rendering heads:",
        "encoder:",
        "attributes:",
        "text encoder:",
        "identity:",
        "edit triplets:",
        "train:",
    ):
        assert bar in progress, bar
    for name in SHIPPED_FILES:
        assert (out / name).is_file() and (out / name.replace(".safetensors", ".json")).is_file()
    manifest = json.loads((out / "world.json").read_text())
    assert manifest["config"]["text_position_randomization"] is False  # --no-text-tpr reached the recipe
    assert {
        "render_bank",
        "vision_and_text_models",
        "out_of_fold_inversions",
        "dit_full",
        "render_identity_views",
    } <= set(manifest["seconds"])
    assert {"encoder", "identity", "attributes", "text_encoder"} <= set(manifest["figures"])
    assert {"validation_relative_mse", "out_of_fold_relative_mse"} <= set(manifest["figures"]["encoder"])
    inversions = load_weights(out / "work" / WorldTrainingConfig.quick().inversions_file)[0]["codes"]
    assert inversions.shape == (20, 14, 64)  # the 10 training identities' 2 views each, every one inverted
    # One more view of each training identity, for the identity network.
    identity_views = HeadBank.load(out / "work" / "identity_bank.safetensors").identity_index.tolist()
    assert identity_views == list(range(10))
    assert manifest["edit_defaults"]["strength"] == 0.6  # the world's tuned sampling settings travel with it
    classifier = load_attribute_classifier(out / "attributes.safetensors")
    assert classifier(torch.zeros(1, 3, 64, 64)).shape == (1, NUM_LOGITS)


@pytest.mark.system
def test_train_all_resumes_without_training_again_and_refuses_other_settings(toy_world, tmp_path):
    from ip2n.synthetic.lab.train_all import SHIPPED_FILES, WorldTrainingConfig, train_world

    out, _progress = toy_world
    before = {name: (out / name).stat().st_mtime_ns for name in SHIPPED_FILES}
    assert _ip2n("synth", "train-all", "--out", out, *QUICK).returncode == 0
    assert {name: (out / name).stat().st_mtime_ns for name in SHIPPED_FILES} == before
    assert "out_of_fold_relative_mse" in json.loads((out / "world.json").read_text())["figures"]["encoder"]
    # Resuming with other settings is refused before anything is touched: the finished stages would be kept.
    refused = _ip2n("synth", "train-all", "--out", out, *QUICK, "--seed", 1)
    assert refused.returncode == 2 and "started with other settings (seed 0 → 1)" in refused.stderr
    assert {name: (out / name).stat().st_mtime_ns for name in SHIPPED_FILES} == before
    assert json.loads((out / "world.json").read_text())["config"]["seed"] == 0
    # A bank left by a run of another size is refused as well (a new --out, the old --work).
    other = dataclasses.replace(WorldTrainingConfig.quick(), identities=13, text_position_randomization=False)
    with pytest.raises(ValueError, match="holds 24 views, not the 13 × 2 of these settings"):
        train_world(tmp_path / "other", out / "work", other)


@pytest.mark.system
def test_eval_on_the_toy_world(toy_eval):
    evaluation = json.loads((toy_eval / "eval.json").read_text())["full"]
    assert set(evaluation["by_count"]) == {"1", "3"} and evaluation["all"]["cases"] == 2
    assert evaluation["identity_judge"] == "own"
    assert set(evaluation["instruction_losses"]) >= {"right", "shuffled", "empty"}
    for row in evaluation["cases"]:  # the two causes of a changed attribute, counted apart
        assert row["changed_others_truth"] <= row["changed_others_reconstruction"] + row["misread_others"]
    report = (toy_eval / "report.md").read_text()
    assert report.startswith("# Editing quality in the synthetic world") and "strength 0.6," in report


@pytest.mark.system
def test_eval_with_another_identity_judge(toy_world, toy_eval, tmp_path):
    """Another identity network as the judge: the same edits, other identity cosines."""
    from ip2n.encoding import IdentityEncoder
    from ip2n.synthetic.lab.train_all import save_model
    from ip2n.synthetic.lab.vision_training import identity_config

    torch.manual_seed(1)
    judge_dir = tmp_path / "judge"
    save_model(judge_dir, "identity", IdentityEncoder(identity_config(64)), identity_config(64), "test")
    run = _ip2n(
        "synth",
        "eval",
        "--weights",
        toy_world[0],
        "--cases",
        1,
        "--counts",
        "1,3",
        "--identity-judge",
        judge_dir,
        "--out",
        tmp_path / "judged",
        "--threads",
        1,
        "--no-loss-diagnostic",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    judged = json.loads((tmp_path / "judged" / "eval.json").read_text())["full"]
    figures = json.loads((toy_eval / "eval.json").read_text())["full"]
    assert judged["identity_judge"] == str(judge_dir) and "instruction_losses" not in judged
    assert judged["all"]["success_truth"] == figures["all"]["success_truth"]
    assert judged["all"]["identity_drift_truth"] == pytest.approx(figures["all"]["identity_drift_truth"])
    assert judged["all"]["identity_cosine"] != pytest.approx(figures["all"]["identity_cosine"])
    report = (tmp_path / "judged" / "report.md").read_text()
    assert f"identity judge: the identity network of {judge_dir}" in report
    assert "instruction_losses" not in report


@pytest.mark.system
def test_eval_of_ablations(toy_world, tmp_path):
    """Ablations are evaluated one by one (each its own training); unknown or untrained ones are refused."""
    out, _progress = toy_world
    unknown = _ip2n(
        "synth", "eval", "--weights", out, "--ablations", "no_tpr,bogus", "--out", tmp_path / "e4"
    )
    assert unknown.returncode != 0
    assert (
        "unknown ablation bogus; choose from no_tpr, no_identity, img2img, single_edit, single_edit_no_tpr"
        in unknown.stderr
    )
    untrained = _ip2n("synth", "eval", "--weights", out, "--ablations", "no_tpr", "--out", tmp_path / "e5")
    assert untrained.returncode != 0 and "no no_tpr ablation in" in untrained.stderr
    stand_in = tmp_path / "world"  # the toy world plus a stand-in ablation: the full model's own DiT
    shutil.copytree(out, stand_in, ignore=shutil.ignore_patterns("work"))
    (stand_in / "ablations" / "no_tpr").mkdir(parents=True)
    for name in ("dit.safetensors", "dit.json"):
        shutil.copy(out / name, stand_in / "ablations" / "no_tpr" / name)
    one_case = ["--cases", 1, "--counts", 1, "--threads", 1, "--no-loss-diagnostic"]
    both = _ip2n(
        "synth", "eval", "--weights", stand_in, "--ablations", "no_tpr", "--out", tmp_path / "e6", *one_case
    )
    assert both.returncode == 0, both.stderr[-3000:]
    assert set(json.loads((tmp_path / "e6" / "eval.json").read_text())) == {"full", "no_tpr"}
    # The stand-in is the full model's own DiT: case by case, nothing differs.
    paired = (tmp_path / "e6" / "report.md").read_text().split("## Case by case against full")[1]
    assert "| no_tpr | +0.000 (0 / 0, p = 1) |" in paired
    # --skip-full evaluates the named ablations alone.
    alone = _ip2n(
        "synth",
        "eval",
        "--weights",
        stand_in,
        "--ablations",
        "no_tpr",
        "--skip-full",
        "--out",
        tmp_path / "e7",
        *one_case,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert set(json.loads((tmp_path / "e7" / "eval.json").read_text())) == {"no_tpr"}


# --- synth eval's refusals (default tier: they stop before any model runs) ---------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--strength", "1.5"], "strength must lie strictly between 0 and 1"),
        (["--skip-full"], "--skip-full leaves nothing to evaluate without --ablations"),
        (["--ablations", "no_tpr,bogus"], "unknown ablation bogus; choose from no_tpr, no_identity"),
        (["--ablations", "no_tpr"], "no no_tpr ablation in"),
        (["--counts", "1,5"], "--cases must be at least 1 and --counts between 1 and 4"),
    ],
)
def test_eval_refuses_bad_options_before_any_work(tmp_path, capsys, arguments, message):
    from ip2n.cli import main

    out = tmp_path / "eval"
    assert main(["synth", "eval", "--out", str(out), *arguments]) == 2  # the built-in world
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_eval_refuses_folders_without_a_world(tmp_path, capsys):
    from ip2n.cli import main

    assert main(["synth", "eval", "--weights", str(tmp_path), "--out", str(tmp_path / "eval")]) == 2
    assert "holds no trained synthetic world" in capsys.readouterr().err
    assert main(["synth", "eval", "--identity-judge", str(tmp_path), "--out", str(tmp_path / "e9")]) == 2
    assert "--identity-judge: " in capsys.readouterr().err and not (tmp_path / "e9").exists()
