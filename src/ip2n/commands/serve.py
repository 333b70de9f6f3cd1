"""`ip2n serve`: the web app — edit portraits in the browser with the built-in model or --weights."""

from __future__ import annotations

import sys

from ip2n.commands.common import UserError, add_threads_option, apply_threads, prepare_output_dir


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "serve",
        help="start the web app: upload a portrait, type an instruction, see views, depth, video and mesh",
        description=(
            "Start a web page for editing portraits (Gradio). Results go into one folder per edit under "
            "OUT/requests; the page serves no file from outside OUT. Open the printed address in a browser. "
            "Without --weights the page runs the built-in model, which edits only heads of its synthetic "
            "world (the page's examples); photos need the official weights."
        ),
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--weights", metavar="DIR", help="folder with the official weight files or their conversion"
    )
    model.add_argument("--model", metavar="NAME", help="a built-in trained model (default: synthetic)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)",
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("-o", "--out", default="ip2n-webapp", help="output folder (default: ./ip2n-webapp)")
    parser.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="edits running at once (default 1)"
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=64,
        metavar="N",
        help="edits that may wait; more are refused (default 64)",
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=20.0, metavar="MB", help="upload size limit (default 20)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="time limit of one edit, checked between its stages (default 300)",
    )
    parser.add_argument(
        "--keep",
        type=int,
        default=200,
        metavar="N",
        help="request folders kept on disk, the oldest removed first (default 200)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_threads_option(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    # Importing Gradio and torch and loading the models take seconds: say so at once (stderr, like
    # the progress bars; the address follows on stdout).
    model = args.model or "synthetic"
    what = f"the weights in {args.weights}" if args.weights else f"the built-in model ({model})"
    print(f"ip2n serve: starting — loading the web app and {what} …", file=sys.stderr, flush=True)
    apply_threads(args.threads)
    # Gradio is imported only here: the other commands do not need it.
    from ip2n.webapp.app import ServeSettings, build_app, check_output_root, launch
    from ip2n.webapp.session import EditSession, check_session_options

    settings = ServeSettings(
        host=args.host,
        port=args.port,
        concurrency=args.concurrency,
        queue_size=args.queue_size,
        max_upload_mb=args.max_upload_mb,
    )
    # Options are checked before the models load, which can take a while.
    try:
        settings.check()
        check_session_options(args.timeout, args.keep)
        check_output_root(args.out)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out_dir = prepare_output_dir(args.out)
    from ip2n.pipeline import EditPipeline
    from ip2n.pipeline.edit import DEFAULT_PRESET

    if args.weights:
        pipeline = EditPipeline.from_weights(args.weights, device=args.device, progress=True)
    else:
        pipeline = EditPipeline.from_preset(args.model or DEFAULT_PRESET, device=args.device, progress=True)
    session = EditSession(pipeline, out_dir, timeout=args.timeout, keep=args.keep)
    app = build_app(session, settings)
    try:
        url = launch(app, session, settings)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({exc}); choose another --port") from None
    print(
        f"ip2n serve: {pipeline.model_name} at {url} (results in {session.output_root}); press Ctrl+C to stop"
    )
    app.block_thread()
    return 0
