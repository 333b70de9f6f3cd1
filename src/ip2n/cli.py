"""`ip2n` command line: a thin layer over the library; every command lives in ip2n.commands.

Heavy imports (torch, open_clip) happen inside the command that needs them, so `ip2n --help`
answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import threading

from ip2n.commands import align, bench, data, demo, edit, models, render, serve, synth, train, weights
from ip2n.version import __version__


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
    for module in (demo, edit, models, align, render, serve, weights, bench, train, synth, data):
        module.add_parser(commands)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is running, so that it cleans up exactly as after Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    # SIGPIPE stays ignored (Python's default) for every command: a web client or a video encoder that
    # stops reading must never kill ip2n outright, in the middle of serving or of writing files. Output
    # piped into `head` ends a command through BrokenPipeError instead (below), quietly, as other tools.
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    previous_sigterm = _handle_sigterm()
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at exit
        return status
    except KeyboardInterrupt as exc:
        what, status = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        print(f"{what}; finished files are complete, nothing half-written was left behind", file=sys.stderr)
        return status
    except BrokenPipeError as exc:
        if not _stdout_closed():
            return _error(args.command, exc)
        return 141  # 128 + SIGPIPE, as a shell reports a tool stopped by a closed pipe
    except Exception as exc:  # noqa: BLE001 — the message types below are the user-facing ones
        return _error(args.command, exc)
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _error(command: str, exc: Exception) -> int:
    from ip2n.commands.common import user_facing_message

    message = user_facing_message(exc)
    if message is None:
        raise exc
    print(f"ip2n {command}: error: {message}", file=sys.stderr)
    return 2


def _handle_sigterm():
    """Make SIGTERM (`kill`, a job scheduler's stop) interrupt like Ctrl-C: writes in progress are
    rolled back and their temporary files removed. Returns the previous handler (None when this is not
    the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _terminate)


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (then stop writing to it for good)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        closed = any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or stdout is not a file
        return False
    if closed:
        # Python flushes stdout at exit; it would complain about the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return closed


if __name__ == "__main__":
    sys.exit(main())
