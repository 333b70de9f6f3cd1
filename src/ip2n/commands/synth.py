"""`ip2n synth`: the synthetic 3-D heads world (docs/synthetic_world.md).

`data` writes triplet data in the official layout; `train-all` trains every model of the world (the
built-in model's weights); `eval` measures editing quality against the world's ground truth.
"""

from __future__ import annotations

import argparse

from ip2n.commands.common import (
    UserError,
    add_threads_option,
    apply_threads,
    bounded_int,
    prepare_output_dir,
)

# The poses the world's models were trained on (docs/synthetic_world.md: yaw ±30°, pitch ±20°).
SAMPLE_YAW_LIMIT = 30.0
SAMPLE_PITCH_LIMIT = 20.0


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "synth",
        help="the synthetic 3-D heads world: sample a head, write triplet data, train its models, evaluate",
        description="Procedural 3-D heads with known identity and attributes (docs/synthetic_world.md).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sample = actions.add_parser(
        "sample",
        help="render one head of the world as a PNG the built-in model edits",
        description=(
            "Render a random head of the synthetic world (identity and attributes drawn from the world's "
            "prior with --seed) into a 128² PNG carrying the world's mark, so that `ip2n edit` without "
            "--weights edits it. Prints the head's attributes."
        ),
    )
    sample.add_argument("-o", "--out", required=True, metavar="FILE.png", help="the PNG to write")
    sample.add_argument("--seed", type=int, default=0, help="which head (default 0)")
    sample.add_argument(
        "--yaw",
        type=float,
        default=0.0,
        help=f"yaw in degrees, within ±{SAMPLE_YAW_LIMIT:g} (default 0: frontal)",
    )
    sample.add_argument(
        "--pitch",
        type=float,
        default=0.0,
        help=f"pitch in degrees, within ±{SAMPLE_PITCH_LIMIT:g} (default 0)",
    )
    sample.set_defaults(run=run_sample)
    data = actions.add_parser(
        "data",
        help="write (source, edited, instructions) triplets in the official layout",
        description=(
            "Render random synthetic heads before and after 1-3 attribute edits, with paraphrased "
            "instructions, into OUT: one folder per pair (NAME_0.png, NAME_1.png, NAME.txt), "
            "dataset.json (EG3D camera labels) and truth.jsonl (ground truth). Same seed, same files. The "
            "images carry the world's mark: `ip2n edit` without --weights edits them."
        ),
    )
    data.add_argument("--out", required=True, help="output folder")
    data.add_argument(
        "--pairs", type=bounded_int(1, 1_000_000), required=True, metavar="N", help="number of image pairs"
    )
    data.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    data.add_argument(
        "--size",
        type=bounded_int(32, 1024),
        default=128,
        help="image size in pixels, even, 32 to 1024 (default 128)",
    )
    data.add_argument(
        "--instructions",
        type=bounded_int(1, 1000),
        default=20,
        metavar="K",
        help="instructions per pair (default 20)",
    )
    add_threads_option(data)
    data.set_defaults(run=run_data)

    train_all = actions.add_parser(
        "train-all",
        help="train every model of the world from scratch (the built-in model's weights)",
        description=(
            "Render a bank of heads, train the inversion encoder, identity network, attribute classifier and "
            "text encoder, invert the bank's views out of fold, then train the conditional DiT with the "
            "training pipeline. Resumable: finished stages in --work and finished models in --out are kept. "
            "The defaults reproduce the shipped weights: they are one such run's, 79 minutes on 2 CPU cores "
            "(world.json records the time of each stage). Progress bars show every stage, the worker "
            "processes' included."
        ),
    )
    train_all.add_argument("--out", required=True, help="folder for the trained weights (+ world.json)")
    train_all.add_argument("--work", help="folder for the head bank and DiT runs (default: OUT/work)")
    train_all.add_argument(
        "--ablations",
        action="store_true",
        help="also train the ablation DiTs (no_tpr, no_identity, img2img, single_edit, "
        "single_edit_no_tpr, true_targets, true_targets_no_identity) and the "
        "recombined-sources experiment (recombined) into OUT/ablations/ (30-50 minutes "
        "each on two threads)",
    )
    train_all.add_argument(
        "--quick", action="store_true", help="tiny budgets: a smoke test of the whole recipe"
    )
    train_all.add_argument(
        "--install",
        action="store_true",
        help="then copy the weights (float16) into the package as the built-in model",
    )
    train_all.add_argument(
        "--text-tpr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="token position randomisation while the text tower learns (default: on, the "
        "shipped tower); --no-text-tpr trains it as CLIP was, prompts always at the start, "
        "the setting in which the DiT's own TPR matters (docs/synthetic_world.md)",
    )
    train_all.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_threads_option(train_all)
    train_all.set_defaults(run=run_train_all)

    evaluation = actions.add_parser(
        "eval",
        help="measure editing quality against the world's ground truth; writes a markdown report",
        description=(
            "Edit heads with identities never seen in training, using held-out phrasings (or "
            "--instructions), and judge the results from the exact latent and with the attribute classifier "
            "over 4 views: success by number of instructions, attribute dependency, AA/AD, identity cosine, "
            "encoder reconstruction."
        ),
    )
    evaluation.add_argument("--weights", help="the world's weights (default: the built-in model)")
    evaluation.add_argument(
        "--ablations",
        nargs="?",
        const="all",
        metavar="VARIANT,...",
        help="also evaluate WEIGHTS/ablations/<variant>/dit.safetensors (from train-all "
        "--ablations): all of them, or the comma-separated variants named",
    )
    evaluation.add_argument(
        "--skip-full",
        action="store_true",
        help="with --ablations: evaluate only the ablations, not the full model as well "
        "(saves its 6-7 minutes per 25 cases; the evaluation is deterministic, so an "
        "earlier report's full-model figures still hold for the same settings)",
    )
    evaluation.add_argument(
        "--instructions",
        metavar="FILE",
        help=(
            'JSON lines {"instruction": "...", "edits": {"attribute": value}} instead of the held-out '
            "phrasings"
        ),
    )
    evaluation.add_argument(
        "--cases",
        type=bounded_int(1, 10_000),
        default=50,
        metavar="N",
        help="cases per number of edits (default 50)",
    )
    evaluation.add_argument(
        "--counts", default="1,2,3,4", help="numbers of edits per instruction (default 1,2,3,4)"
    )
    evaluation.add_argument(
        "--out", default="ip2n-synth-eval", help="report folder (default ./ip2n-synth-eval)"
    )
    evaluation.add_argument("--seed", type=int, default=2024, help="which heads and wordings (default 2024)")
    evaluation.add_argument(
        "--phrasings",
        choices=("heldout", "train"),
        default="heldout",
        help="wording of the generated instructions: held out of training (default) or the "
        "training split (tells the text encoder's generalisation from the editing)",
    )
    evaluation.add_argument(
        "--steps", type=bounded_int(1, 1000), help="DDIM schedule length (default: the model's)"
    )
    evaluation.add_argument("--strength", type=float, help="edit strength (default: the model's)")
    evaluation.add_argument("--cfg-text", type=float, help="text guidance (default: the model's)")
    evaluation.add_argument("--cfg-image", type=float, help="image guidance (default: the model's)")
    evaluation.add_argument(
        "--tpr",
        action="store_true",
        help="shift each instruction's tokens by a random offset at inference too, as the "
        "official code does (default: off; the paper's TPR shifts tokens in training only)",
    )
    evaluation.add_argument(
        "--identity-judge",
        metavar="DIR",
        help="measure the identity cosines with the identity network in DIR (another world's "
        "weights folder) instead of the model's own: a fixed judge for comparing models "
        "whose identity networks differ",
    )
    evaluation.add_argument(
        "--no-loss-diagnostic",
        action="store_true",
        help="skip the diagnostic of how much each DiT relies on the instruction (its denoising "
        "error with the right, a shuffled and the empty prompt on 128 fresh triplets): most of "
        "the time of a small evaluation, and not part of the editing figures",
    )
    add_threads_option(evaluation)
    evaluation.set_defaults(run=run_eval)


def run_sample(args) -> int:
    import math
    from pathlib import Path

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(
            f"-o {out}: the head is written as PNG (the world's mark is a PNG text chunk); use .png"
        )
    for name, value, limit in (
        ("--yaw", args.yaw, SAMPLE_YAW_LIMIT),
        ("--pitch", args.pitch, SAMPLE_PITCH_LIMIT),
    ):
        if not (math.isfinite(value) and abs(value) <= limit):
            raise UserError(f"{name} must be within ±{limit:g} degrees (the world's poses), got {value:g}")
    if out.is_dir():
        raise UserError(f"-o {out} is a folder; name the PNG file to write")
    prepare_output_dir(out.parent if str(out.parent) else ".")

    from ip2n.builtin import render_portrait, sample_head
    from ip2n.export.images import save_image

    identity, attributes = sample_head(args.seed)
    save_image(render_portrait(identity, attributes, args.yaw, args.pitch, seed=args.seed), out)
    shown = ", ".join(f"{name}={value}" for name, value in attributes.items() if value not in (False, "none"))
    print(f"{out}: head {args.seed} of the synthetic world ({shown or 'no special attributes'})")
    return 0


def run_data(args) -> int:
    apply_threads(args.threads)
    if args.pairs < 1:
        raise UserError(f"--pairs must be at least 1, got {args.pairs}")
    if args.size < 32 or args.size % 2:
        raise UserError(f"--size must be an even number of at least 32, got {args.size}")
    if args.instructions < 1:
        raise UserError(f"--instructions must be at least 1, got {args.instructions}")
    out_dir = prepare_output_dir(args.out)

    import dataclasses

    from ip2n.synthetic.lab.data import write_triplets
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator, SyntheticHeadsConfig

    # The neural render runs at half the image size; the image is its bilinear enlargement.
    config = dataclasses.replace(
        SyntheticHeadsConfig(), img_resolution=args.size, neural_rendering_resolution=args.size // 2
    )
    write_triplets(
        out_dir,
        args.pairs,
        model=SyntheticHeadGenerator(config),
        seed=args.seed,
        instructions_per_pair=args.instructions,
    )
    print(out_dir / "dataset.json")
    return 0


def run_train_all(args) -> int:
    apply_threads(args.threads)
    out_dir = prepare_output_dir(args.out)
    import dataclasses
    import json
    from pathlib import Path

    from ip2n.synthetic.lab.train_all import VARIANTS, WorldTrainingConfig, export_builtin, train_world

    config = WorldTrainingConfig.quick() if args.quick else WorldTrainingConfig()
    config = dataclasses.replace(config, seed=args.seed, text_position_randomization=args.text_tpr)
    variants = VARIANTS if args.ablations else ("full",)
    manifest = train_world(out_dir, Path(args.work) if args.work else out_dir / "work", config, variants)
    print(json.dumps({"seconds": manifest["seconds"], "figures": manifest["figures"]}, indent=2))
    print(out_dir)
    if args.install:
        from ip2n.builtin import WEIGHTS_DIR

        for path in export_builtin(out_dir, WEIGHTS_DIR):
            print(path)
    return 0


def _identity_judge(folder):
    """The identity network of another world's weights folder (`--identity-judge`)."""
    from ip2n.checkpoints.editing_weights import WEIGHT_FILES, load_identity

    if not (folder / WEIGHT_FILES["identity"].converted).is_file():
        raise UserError(
            f"--identity-judge: {folder} holds no identity network ({WEIGHT_FILES['identity'].converted} "
            "is missing); pass a weights folder of `ip2n synth train-all`"
        )
    return load_identity(folder).eval()


def run_eval(args) -> int:
    apply_threads(args.threads)
    from pathlib import Path

    from ip2n.builtin import WEIGHTS_DIR, edit_defaults, load_synthetic_pipeline
    from ip2n.diffusion.editing import edit_schedule
    from ip2n.synthetic.lab.evaluate import (
        EvalSettings,
        evaluate,
        instruction_losses,
        make_cases,
        read_instruction_cases,
    )
    from ip2n.synthetic.lab.train_all import (
        ATTRIBUTES_FILE,
        DIT_VARIANTS,
        VARIANTS,
        load_attribute_classifier,
    )

    weights = Path(args.weights) if args.weights else WEIGHTS_DIR
    if not (weights / ATTRIBUTES_FILE).is_file():
        raise UserError(
            f"{weights} holds no trained synthetic world ({ATTRIBUTES_FILE} is missing); "
            "pass the --out folder of `ip2n synth train-all`"
        )
    try:
        counts = tuple(int(part) for part in args.counts.split(","))
    except ValueError:
        raise UserError(
            f"--counts must be comma-separated numbers like 1,2,3,4, got {args.counts!r}"
        ) from None
    if args.cases < 1 or not counts or min(counts) < 1 or max(counts) > 4:
        raise UserError("--cases must be at least 1 and --counts between 1 and 4")
    settings = EvalSettings(
        cases_per_count=args.cases,
        counts=counts,
        seed=args.seed,
        phrasings=args.phrasings,
        num_inference_steps=args.steps,
        strength=args.strength,
        guidance_scale=args.cfg_text,
        image_guidance_scale=args.cfg_image,
        token_position_randomization=args.tpr,
    )
    if args.instructions:
        try:
            cases = read_instruction_cases(args.instructions, args.seed)
        except (OSError, ValueError) as exc:
            raise UserError(str(exc)) from None
    else:
        cases = make_cases(settings)
    identity_judge = _identity_judge(Path(args.identity_judge)) if args.identity_judge else None
    if args.skip_full and not args.ablations:
        raise UserError(
            "--skip-full leaves nothing to evaluate without --ablations; name the ablations "
            "(e.g. --ablations no_tpr) or drop --skip-full"
        )
    variants: dict[str, Path | None] = {} if args.skip_full else {"full": None}
    if args.ablations:
        chosen = VARIANTS[1:] if args.ablations == "all" else tuple(args.ablations.split(","))
        unknown = [variant for variant in chosen if variant not in VARIANTS[1:]]
        if unknown:
            raise UserError(f"unknown ablation {', '.join(unknown)}; choose from {', '.join(VARIANTS[1:])}")
        for variant in chosen:
            folder = weights / "ablations" / variant
            if not (folder / "dit.safetensors").is_file():
                raise UserError(
                    f"no {variant} ablation in {folder}; run `ip2n synth train-all --ablations` first"
                )
            variants[variant] = folder
    # Unset sampling values come from the model's defaults (world.json); every variant uses the same ones.
    settings = settings.resolved(edit_defaults(weights))
    # resolved() has filled every unset sampling value from the model's defaults.
    assert settings.num_inference_steps is not None and settings.strength is not None
    try:
        edit_schedule(settings.num_inference_steps, settings.strength)
    except ValueError as exc:
        raise UserError(f"{exc} (--steps, --strength)") from None
    out_dir = prepare_output_dir(args.out)
    import json

    from ip2n.atomic import write_text_atomic
    from ip2n.synthetic.lab.report import write_report

    classifier = load_attribute_classifier(weights / ATTRIBUTES_FILE)
    results = {}
    for variant, dit_dir in variants.items():
        pipeline = load_synthetic_pipeline("cpu", weights, dit_dir)
        results[variant] = evaluate(
            pipeline, cases, settings, classifier, variant, identity_judge=identity_judge
        )
        results[variant]["identity_judge"] = args.identity_judge or "own"
        if args.no_loss_diagnostic:
            continue
        switches = DIT_VARIANTS[variant]
        results[variant]["instruction_losses"] = instruction_losses(
            pipeline,
            seed=args.seed,
            identity_conditioning=switches.identity,
            source_conditioning=switches.source_conditioning,
        )
    write_text_atomic(out_dir / "eval.json", json.dumps(results, indent=2) + "\n")
    source = (
        f"{args.instructions} ({len(cases)} instructions)"
        if args.instructions
        else f"{'held-out' if args.phrasings == 'heldout' else 'training-split'} phrasings, "
        f"{args.cases} cases per count {counts}"
    )
    report = write_report(
        out_dir,
        results,
        {
            "weights": str(weights),
            "instructions": source,
            "heads": "identities never seen in training",
            "views": f"{settings.views} random views per edit (yaw ±30°, pitch ±20°), 64² renders",
            "identity judge": f"the identity network of {args.identity_judge}"
            if args.identity_judge
            else "the model's own identity network",
            "settings": f"{settings.num_inference_steps}-step schedule, strength {settings.strength}, "
            f"text guidance {settings.guidance_scale}, image guidance {settings.image_guidance_scale}, "
            f"seed {args.seed}"
            + (
                ", token positions randomised at inference (--tpr)"
                if settings.token_position_randomization
                else ""
            ),
        },
    )
    print(json.dumps({variant: result["all"] for variant, result in results.items()}, indent=2))
    print(report)
    return 0
