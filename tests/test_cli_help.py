"""`ip2n --help` and every `ip2n COMMAND --help` answer without importing torch, OpenCLIP or Gradio
(checked by the modules a fresh process imports, not by seconds), their texts state the defaults the
code uses, and `ip2n serve` says it is starting before its slow imports."""

import re
import socket
import subprocess
import sys

import pytest

from ip2n.builtin import builtin_edit_default_values
from ip2n.cli import main
from ip2n.defaults import (
    DEFAULT_MESH_RESOLUTION,
    DEFAULT_ORBIT_FRAMES,
    DEMO_MESH_RESOLUTION,
    DEMO_ORBIT_FRAMES,
)

HEAVY = ("torch", "open_clip", "gradio")
COMMANDS = [
    [],
    ["demo"],
    ["edit"],
    ["models"],
    ["align"],
    ["render"],
    ["serve"],
    ["weights", "convert"],
    ["bench", "edit"],
    ["train"],
    ["synth"],
    ["synth", "sample"],
    ["synth", "eval"],
]


def _imported(stderr: str) -> list[str]:
    """Module names from a `python -X importtime` log."""
    return [line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")]


def _heavy(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] in HEAVY]


def test_building_the_parser_imports_no_heavy_module():
    script = (
        "import sys; from ip2n.cli import build_parser; build_parser(); "
        f"print([name for name in {HEAVY!r} if name in sys.modules])"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command) or "ip2n")
def test_help_answers_without_heavy_imports(command):
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ip2n.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith("usage: ip2n")
    modules = _imported(completed.stderr)
    assert "ip2n.commands.edit" in modules  # the log was read
    assert _heavy(modules) == []


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--help"])
    assert stopped.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_states_the_defaults_the_code_uses(capsys):
    builtin = builtin_edit_default_values()
    demo = _help(capsys, "demo")
    assert "density grid size N³" in demo and f"(default {DEMO_MESH_RESOLUTION})" in demo
    assert re.search(rf"orbit video frames[^()]*\(default {DEMO_ORBIT_FRAMES};", demo)
    assert "(default ply)" in demo
    edit = _help(capsys, "edit")
    assert re.search(rf"--frames N orbit video frames[^()]*\(default {DEFAULT_ORBIT_FRAMES}\)", edit)
    assert f"(default {DEFAULT_MESH_RESOLUTION})" in edit
    assert f"0.3 (the paper's) with --weights, {builtin['strength']:g} for the built-in model" in edit
    assert "--any-image" in edit and "--any-instruction" in edit
    render = _help(capsys, "render")
    assert "512² for the released EG3D generator, 128² for the built-in world" in render
    assert "RANDOM" not in render and "no trained generator" not in render
    top = _help(capsys)
    assert "sample a head, write triplet data, train its models, evaluate" in top
    assert "models" in top
    assert "CPU threads for torch (default: 2)" in _help(capsys, "bench", "edit")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_says_it_is_starting_before_the_slow_imports(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "ip2n.cli", "serve", "--port", str(_free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    lines = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if line.startswith("ip2n serve: starting"):
                break
    finally:
        process.kill()
        process.wait(timeout=60)
    assert lines and lines[-1].startswith("ip2n serve: starting — loading the web app and the built-in model")
    assert _heavy(_imported("".join(lines))) == []
