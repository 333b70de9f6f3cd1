"""`ip2n weights download`, offline: every host of the sources table is played by a local HTTP server
(with HTTP Range support, and a first response that breaks off half-way) or by planted files; the
network is never touched."""

import hashlib
import http.server
import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from helpers.official_files import (
    TINY_SIZES,
    WIDE_TEXT,
    WIDE_TEXT_CONFIG,
    dit_checkpoint,
    official_weights,
    open_clip_state_dict,
)
from ip2n.checkpoints import download
from ip2n.checkpoints.download import DownloadFailed, download_weights, fetch
from ip2n.checkpoints.editing_weights import WEIGHT_FILES, check_weights_dir
from ip2n.cli import main
from ip2n.pipeline import EditPipeline
from ip2n.text import TEXT_ENCODER_PRESETS
from ip2n.weight_sources import OFFICIAL_FILES, Host, OfficialFile


class FileServer:
    """A local HTTP server for `files` (path → bytes) that honours `Range: bytes=N-` and records the
    requests; a path in `break_off` sends its first full response only half-way, then hangs up."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.break_off: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                server.requests.append((self.path, wanted))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if wanted:
                    start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not wanted and self.path in server.break_off:
                    server.break_off.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    files = FileServer()
    yield files
    files.close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _url_file(server: FileServer, name: str, body: bytes, **fields) -> OfficialFile:
    server.files[f"/files/{name}"] = body
    return OfficialFile(
        name, "generator", "a test file", Host("url", f"{server.url}/files/{name}", "a test", True), **fields
    )


# --- the sources table --------------------------------------------------------------------------------


def test_every_source_saves_a_file_ip2n_reads():
    for component, choices in OFFICIAL_FILES.items():
        for choice, file in choices.items():
            assert file.component == component, choice
            assert file.name in WEIGHT_FILES[component].official, (component, choice, file.name)
            assert file.host.kind in ("url", "gdrive", "hf", "browser")
            assert file.host.published_by and file.licence
            assert file.host.link().startswith("https://"), file.host.link()
            if file.host.kind == "gdrive":
                assert re.fullmatch(r"[-\w]{20,}", file.host.location)


# --- fetching -------------------------------------------------------------------------------------------


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path, monkeypatch):
    body = os.urandom(3_000_000)
    file = _url_file(server, "ffhq512-128.pkl", body, size=len(body), sha256=_sha256(body))
    server.break_off.add("/files/ffhq512-128.pkl")
    monkeypatch.setattr(download, "DOWNLOAD_RETRIES", 0)  # the first run stops where the server hung up
    with pytest.raises(DownloadFailed, match="run the command again to resume"):
        fetch(file, tmp_path)
    assert not (tmp_path / "ffhq512-128.pkl").exists()
    [partial] = [path for path in tmp_path.iterdir() if path.name.endswith(".part")]
    kept = partial.stat().st_size  # what arrived before the server hung up, in whole chunks
    assert 0 < kept <= len(body) // 2
    fetch(file, tmp_path)  # the next run goes on from the partial file
    assert (tmp_path / "ffhq512-128.pkl").read_bytes() == body
    assert server.requests[-1] == ("/files/ffhq512-128.pkl", f"bytes={kept}-")
    assert not list(tmp_path.glob("*.part"))
    assert (tmp_path / "SHA256SUMS").read_text() == f"{_sha256(body)}  ffhq512-128.pkl\n"


def test_google_drive_ids_are_fetched_with_gdown(server, tmp_path, monkeypatch):
    body = os.urandom(10_000)
    server.files["/uc?id=the-drive-file-id-0123456789"] = body
    monkeypatch.setattr(download, "DRIVE_URL", server.url + "/uc?id={id}")
    file = OfficialFile(
        "model_ir_se50.pth", "identity", "ir-se50", Host("gdrive", "the-drive-file-id-0123456789", "x", True)
    )
    assert fetch(file, tmp_path).read_bytes() == body


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"size": 5}, "it has 100 bytes, the published file 5"), ({"sha256": "0" * 64}, "its SHA-256 is")],
)
def test_a_file_unlike_the_published_one_is_rejected(server, tmp_path, fields, message):
    file = _url_file(server, "preim3d.pt", os.urandom(100), **fields)
    with pytest.raises(DownloadFailed, match=message):
        fetch(file, tmp_path)
    assert not (tmp_path / "preim3d.pt").exists()
    assert (tmp_path / "preim3d.pt.rejected").stat().st_size == 100


def test_failures_say_how_to_go_on(server, tmp_path):
    file = OfficialFile("G_ema.pkl", "generator", "x", Host("url", f"{server.url}/nothing-here", "x", True))
    with pytest.raises(DownloadFailed, match=r"download .*/nothing-here yourself and save it as .*G_ema.pkl"):
        fetch(file, tmp_path)


# --- files a browser fetches ------------------------------------------------------------------------------


BROWSER_FILE = OfficialFile(
    "instructpix2nerf.pt", "dit", "the DiT", Host("browser", "https://pan.example/s/abc", "x", True)
)


def _browser_only(monkeypatch, **files: OfficialFile) -> None:
    """A table whose components come from the given files (others: already-present tiny files)."""
    table = {component: {"only": file} for component, file in files.items()}
    monkeypatch.setattr(download, "OFFICIAL_FILES", {**OFFICIAL_FILES, **table})
    monkeypatch.setattr(download, "FETCH_ORDER", tuple(files))
    choices = {**download.default_choices(), **dict.fromkeys(table, "only")}
    monkeypatch.setattr(download, "default_choices", lambda: choices)


def test_browser_files_are_announced_and_awaited(tmp_path, monkeypatch):
    _browser_only(monkeypatch, dit=BROWSER_FILE)
    said: list[str] = []
    browser = tmp_path / "Downloads"
    browser.mkdir()
    content = os.urandom(5000)

    def save_like_firefox() -> None:
        time.sleep(0.3)
        (browser / "instructpix2nerf.pt").write_bytes(b"")  # the empty placeholder ...
        (browser / "instructpix2nerf.pt.part").write_bytes(content[:100])  # ... beside the partial file
        time.sleep(0.3)
        (browser / "instructpix2nerf.pt").write_bytes(content)
        (browser / "instructpix2nerf.pt.part").unlink()

    saver = threading.Thread(target=save_like_firefox)
    saver.start()
    monkeypatch.setattr(download, "_text_tower_available", lambda official: True)
    result = download_weights(
        tmp_path / "weights",
        downloads_dir=browser,
        wait_seconds=20,
        poll_seconds=0.05,
        convert=False,
        say=said.append,
    )
    saver.join()
    moved = tmp_path / "weights" / "official" / "instructpix2nerf.pt"
    assert result.ok and result.present == {"dit": moved}
    assert moved.read_bytes() == content and not (browser / "instructpix2nerf.pt").exists()
    announcement = said[0]
    assert "https://pan.example/s/abc" in announcement and str(moved) in announcement


def test_waiting_for_a_browser_file_times_out(tmp_path, monkeypatch, capsys):
    _browser_only(monkeypatch, dit=BROWSER_FILE)
    start = time.monotonic()
    status = main(
        ["weights", "download", "-o", str(tmp_path / "w"), "--timeout", "0.3", "--downloads", str(tmp_path)]
    )
    assert status == 1 and time.monotonic() - start < 10
    out = capsys.readouterr().out
    assert (
        "https://pan.example/s/abc" in out and str(tmp_path / "w" / "official" / "instructpix2nerf.pt") in out
    )
    assert "still missing in" in out and "instructpix2nerf.pt" in out


def test_a_dit_without_its_text_tower_brings_openclip_from_the_hub(tmp_path, monkeypatch, fixtures_dir):
    import huggingface_hub

    _browser_only(monkeypatch, dit=BROWSER_FILE)
    official = tmp_path / "w" / "official"
    official.mkdir(parents=True)
    torch.save(dit_checkpoint(fixtures_dir, embed_text=False), official / "instructpix2nerf.pt")
    asked = []

    def hf_hub_download(repo_id, filename, *, local_dir):
        asked.append((repo_id, filename))
        torch.save(open_clip_state_dict(), Path(local_dir) / filename)
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    result = download_weights(tmp_path / "w", wait_seconds=0, convert=False, say=lambda text: None)
    assert asked == [("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "open_clip_pytorch_model.bin")]
    assert result.present["text_encoder"] == official / "open_clip_pytorch_model.bin"
    assert "open_clip_pytorch_model.bin" in (official / "SHA256SUMS").read_text()


# --- the command, end to end ----------------------------------------------------------------------------


def test_weights_download_fetches_converts_checks_and_names_the_flag(
    server, tmp_path, monkeypatch, capsys, tmp_path_factory, fixtures_dir
):
    """The generator from a URL (NVIDIA's network pickle, cut off once), IR-SE50 by Drive id, the DiT and
    the encoder saved in a browser: all tiny official-format files of the tests."""
    tiny = official_weights(tmp_path_factory, fixtures_dir)
    snapshot = (fixtures_dir / "eg3d_pickle" / "network-snapshot-small.pkl").read_bytes()
    server.files["/ngc/ffhq512-128.pkl"] = snapshot
    server.break_off.add("/ngc/ffhq512-128.pkl")
    server.files["/uc?id=ir-se50-drive-id-0123456789"] = (tiny / "model_ir_se50.pth").read_bytes()
    monkeypatch.setattr(download, "DRIVE_URL", server.url + "/uc?id={id}")
    generator = OFFICIAL_FILES["generator"]["ngc"]
    identity = OFFICIAL_FILES["identity"]["psp"]
    table = {
        **OFFICIAL_FILES,
        "generator": {
            "ngc": replace(
                generator, host=replace(generator.host, location=f"{server.url}/ngc/ffhq512-128.pkl")
            )
        },
        "identity": {
            "psp": replace(identity, host=replace(identity.host, location="ir-se50-drive-id-0123456789"))
        },
    }
    monkeypatch.setattr(download, "OFFICIAL_FILES", table)
    browser = tmp_path / "Downloads"
    browser.mkdir()
    for name in ("instructpix2nerf.pt", "preim3d.pt"):  # already saved by the browser
        os.link(tiny / name, browser / name)
    monkeypatch.setattr(download, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(download, "EditingPresets", lambda: TINY_SIZES)  # the tiny files' sizes
    monkeypatch.setitem(TEXT_ENCODER_PRESETS, WIDE_TEXT, WIDE_TEXT_CONFIG)
    out = tmp_path / "pretrained"

    status = main(["weights", "download", "-o", str(out), "--downloads", str(browser), "--timeout", "30"])

    printed = capsys.readouterr().out
    assert status == 0, printed
    assert f"--weights {out}" in printed and "https://pan.quark.cn/s/020e7faf53e9" in printed
    assert "(link not confirmed: published by EG3D's docs/models.md" in printed  # the NGC file URL
    assert [wanted for path, wanted in server.requests if path == "/ngc/ffhq512-128.pkl"][0] is None
    assert [wanted for path, wanted in server.requests if path == "/ngc/ffhq512-128.pkl"][-1].startswith(
        "bytes="
    )
    official = out / "official"
    assert (official / "ffhq512-128.pkl").read_bytes() == snapshot
    assert {"ffhq512-128.pkl", "model_ir_se50.pth"} <= {
        line.split()[1] for line in (official / "SHA256SUMS").read_text().splitlines()
    }
    reports = check_weights_dir(out, TINY_SIZES)
    assert all(report.ok for report in reports) and all(report.file.parent == out for report in reports)
    pipe = EditPipeline.from_pretrained(out)
    assert pipe.generator_source == {"kind": "eg3d", "weights": str(out.resolve())}
    # A second run finds everything in place and converts nothing again.
    assert main(["weights", "download", "-o", str(out), "--timeout", "0"]) == 0
    assert "up to date" in capsys.readouterr().out
