"""Load test of the web app: N users submit an edit at the same moment through the Gradio API.

    python benchmarks/webapp_load.py                          # serves the built-in model itself
    python benchmarks/webapp_load.py --url http://127.0.0.1:7860 --image face.png --requests 20

Latency is measured per request from submitting (upload included) to receiving the result, so it
includes the time spent waiting in the app's queue. Prints p50 / p90 / max, writes them with every
request's time to --json, and exits with status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

DEFAULT_INSTRUCTION = "add eyeglasses"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running `ip2n serve` (default: start one on the built-in model)")
    parser.add_argument("--model", default="synthetic", help="built-in model to serve without --url")
    parser.add_argument("--image", help="portrait to edit (default: the first example portrait)")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    parser.add_argument("--requests", type=int, default=20, help="concurrent edits (default 20)")
    parser.add_argument("--json", type=Path, default=Path("webapp_load.json"), help="report file")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error(f"--requests must be at least 1, got {args.requests}")

    from ip2n.webapp.app import example_inputs

    with tempfile.TemporaryDirectory(prefix="ip2n-load-") as scratch:
        url, close = (args.url, None) if args.url else serve_builtin(args.model, Path(scratch) / "webapp")
        image = args.image or example_inputs(Path(scratch))[0][0]
        try:
            result = run_load(url, image, args.instruction, args.requests)
        finally:
            if close is not None:
                close()
    latency = result["latency_seconds"]
    print(
        f"{result['requests']} concurrent edits, {result['failed']} failed, "
        f"{result['wall_seconds']:.1f} s in all; "
        f"latency p50 {latency['p50']:.2f} s, p90 {latency['p90']:.2f} s, max {latency['max']:.2f} s"
    )
    for error in result["errors"]:
        print(f"  failed: {error}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"report: {args.json}")
    return 0 if result["failed"] == 0 else 1


def serve_builtin(model: str, output_root: Path):
    """Start the app on a built-in model at a free local port → (url, function that stops it)."""
    from ip2n.pipeline import EditPipeline
    from ip2n.webapp import EditSession
    from ip2n.webapp.app import ServeSettings, build_app, launch

    session = EditSession(EditPipeline.from_preset(model), output_root)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        settings = ServeSettings(port=probe.getsockname()[1])
    app = build_app(session, settings)
    return launch(app, session, settings), app.close


def run_load(url: str, image: str, instruction: str, requests: int) -> dict:
    """`requests` clients submit the same edit at once (default page settings, no alignment)."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(requests)]  # one per simulated user
    start_together = threading.Barrier(requests)

    def one_edit(client: Client) -> tuple[float, str | None]:
        start_together.wait()
        start = time.perf_counter()
        try:
            client.predict(handle_file(image), instruction, align=False, api_name="/edit")
            return time.perf_counter() - start, None
        except Exception as exc:  # noqa: BLE001 — every failure is counted and reported
            return time.perf_counter() - start, f"{type(exc).__name__}: {exc}"

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=requests) as pool:
        outcomes = list(pool.map(one_edit, clients))
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    seconds = [round(elapsed, 3) for elapsed, _ in outcomes]
    errors = [error for _, error in outcomes if error is not None]
    p50, p90 = np.percentile(seconds, [50, 90])
    return {
        "url": url,
        "instruction": instruction,
        "requests": requests,
        "failed": len(errors),
        "errors": errors,
        "wall_seconds": round(wall, 3),
        "latency_seconds": {
            "p50": round(float(p50), 3),
            "p90": round(float(p90), 3),
            "max": max(seconds),
            "min": min(seconds),
            "mean": round(float(np.mean(seconds)), 3),
        },
        "per_request_seconds": seconds,
    }


if __name__ == "__main__":
    sys.exit(main())
