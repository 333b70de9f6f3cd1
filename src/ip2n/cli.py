"""`ip2n` command line: a thin layer over the library; every command lives in ip2n.commands.

Heavy imports (torch, open_clip) happen inside the command that needs them, so `ip2n --help`
answers at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ip2n import __version__
from ip2n.commands import align, bench, demo, edit, render, serve, synth, train, weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ip2n",
        description=(
            "InstructPix2NeRF: edit a portrait in 3-D with a plain-English instruction, then render "
            "any view, depth, an orbit video or a mesh."
        ),
        epilog="Run `ip2n COMMAND --help` for the options of a command. Start with `ip2n demo`.",
    )
    parser.add_argument("--version", action="version", version=f"ip2n {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (demo, edit, align, render, serve, weights, bench, train, synth):
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Behave like other command-line tools when the output is piped into `head`.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(
            "interrupted; finished files are complete, nothing half-written was left behind", file=sys.stderr
        )
        return 130
    except Exception as exc:  # noqa: BLE001 — the message types below are the user-facing ones
        from ip2n.commands.common import user_facing_message

        message = user_facing_message(exc)
        if message is None:
            raise
        print(f"ip2n {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
