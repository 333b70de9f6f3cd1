"""The web app facing hostile clients: what it serves (only its own image, video and mesh files, typed
and never sniffed), what it accepts as uploads (a few images of bounded size, pruned like the request
folders), which output folders it takes, the numeric settings of API requests, and a server that
survives clients that stop reading."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from helpers.images import portrait
from ip2n.cli import main
from ip2n.pipeline import EditPipeline
from ip2n.webapp import EditSession, RequestError, WebEditSettings
from ip2n.webapp.app import ServeSettings, build_app, check_output_root, example_inputs, launch

UPLOAD_LIMIT_MB = 1.0
KEEP = 3


@pytest.fixture(scope="module")
def web_pipeline() -> EditPipeline:
    return EditPipeline.from_preset("synthetic")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(web_pipeline, tmp_path_factory):
    """The app on a free local port, keeping KEEP request folders and uploads → (url, session)."""
    session = EditSession(web_pipeline, tmp_path_factory.mktemp("served"), keep=KEEP)
    settings = ServeSettings(port=_free_port(), max_upload_mb=UPLOAD_LIMIT_MB)
    app = build_app(session, settings)
    url = launch(app, session, settings)
    yield url.rstrip("/"), session
    app.close()


def _uploads(session: EditSession) -> list[Path]:
    return sorted(path for path in session.output_root.iterdir() if path.is_dir() and len(path.name) == 64)


def _png_bytes(seed: int) -> bytes:
    import io

    buffer = io.BytesIO()
    portrait(seed, size=64).save(buffer, format="PNG")
    return buffer.getvalue()


# --- uploads --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, kind",
    [
        ("page.html", b"<script>alert(document.cookie)</script>", "text/html"),
        ("image.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml"),
        ("notes.txt", b"just text", "text/plain"),
    ],
)
def test_uploads_of_other_types_than_images_are_refused_and_deleted(server, name, content, kind):
    url, session = server
    before = _uploads(session)
    with httpx.Client(base_url=url) as client:
        response = client.post("/gradio_api/upload", files={"files": (name, content, kind)})
    assert response.status_code == 415 and "only images can be uploaded" in response.text
    assert _uploads(session) == before
    assert not any(path.name == name for path in session.output_root.rglob("*"))


def test_an_uploaded_file_is_served_as_its_image_type_never_sniffed(server):
    url, _ = server
    html_inside = b"<html><script>alert(document.cookie)</script></html>"
    with httpx.Client(base_url=url) as client:
        (path,) = client.post(
            "/gradio_api/upload", files={"files": ("face.png", html_inside, "text/html")}
        ).json()
        response = client.get(f"/gradio_api/file={path}")
    assert response.status_code == 200 and response.content == html_inside
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_upload_count_and_size_are_bounded(server):
    url, session = server
    before = _uploads(session)
    with httpx.Client(base_url=url) as client:
        many = [("files", (f"face{index}.png", _png_bytes(index), "image/png")) for index in range(5)]
        response = client.post("/gradio_api/upload", files=many)
        assert response.status_code == 413 and "at most 4 files" in response.text
        # Five files under the size limit each, together over the request limit: refused unread.
        big = [("files", (f"big{index}.png", os.urandom(900_000), "image/png")) for index in range(5)]
        assert client.post("/gradio_api/upload", files=big).status_code == 413
        # A body of unknown length (chunked) cannot be bounded in advance: refused.
        chunked = client.post(
            "/gradio_api/upload",
            content=iter([b"--x\r\n", b"payload"]),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert chunked.status_code == 411
    assert _uploads(session) == before


def test_old_uploads_are_pruned(server):
    url, session = server
    with httpx.Client(base_url=url) as client:
        for seed in range(KEEP + 3):
            upload = {"files": ("face.png", _png_bytes(100 + seed), "image/png")}
            (newest,) = client.post("/gradio_api/upload", files=upload).json()
    uploads = _uploads(session)
    assert len(uploads) == KEEP and Path(newest).parent in uploads


# --- what is served --------------------------------------------------------------------------------------


def test_only_the_apps_own_image_video_and_mesh_files_are_served(server, tmp_path):
    url, session = server
    root = session.output_root
    example = root / "examples" / "example_0.png"
    assert example.is_file()
    # Files of other types, or outside the app's own folders, even inside the output folder:
    request = root / "requests" / "20240101-000000-000000-test"
    request.mkdir(parents=True, exist_ok=True)
    (request / "result.json").write_text("{}")
    (request / "page.html").write_text("<script>alert(1)</script>")
    (root / "secret.png").write_bytes(_png_bytes(1))
    (root / "photos").mkdir(exist_ok=True)
    (root / "photos" / "private.png").write_bytes(_png_bytes(2))
    (request / ".hidden.png").write_bytes(_png_bytes(3))
    refused = [
        request / "result.json",
        request / "page.html",
        request / ".hidden.png",
        root / "secret.png",
        root / "photos" / "private.png",
        root / ".ip2n-webapp",
    ]
    with httpx.Client(base_url=url) as client:
        served = client.get(f"/gradio_api/file={example}")
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert served.headers["x-content-type-options"] == "nosniff"
        for path in refused:
            assert path.exists() and client.get(f"/gradio_api/file={path}").status_code == 403, path
        assert client.get(f"/gradio_api/file/{example}").status_code == 403  # the older route
        assert client.get("/gradio_api/proxy=https://example.com/x.png").status_code == 403


def test_a_folder_holding_other_files_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(EditPipeline, "from_preset", lambda *args, **kwargs: pytest.fail("loaded a model"))
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "secret.txt").write_text("password")
    assert main(["serve", "-o", str(folder), "--port", str(_free_port())]) == 2
    assert "already holds files that ip2n serve did not write (such as secret.txt)" in capsys.readouterr().err
    assert sorted(path.name for path in folder.iterdir()) == ["secret.txt"]


def test_the_apps_own_folder_is_accepted_again(web_pipeline, tmp_path, monkeypatch):
    """A folder with the app's marker (written by build_app) is the app's: a restarted server takes it."""
    for variable in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):  # build_app sets them for the process
        monkeypatch.setenv(variable, os.environ.get(variable, ""))
    session = EditSession(web_pipeline, tmp_path / "out")
    check_output_root(session.output_root)  # empty folders only: fine
    build_app(session)
    assert (session.output_root / ".ip2n-webapp").is_file()
    example_inputs(session.output_root)
    check_output_root(session.output_root)  # now holds files, its own
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "requests").mkdir()
    (tmp_path / "other" / "requests" / "old.png").write_bytes(_png_bytes(0))
    with pytest.raises(ValueError, match="ip2n serve did not write"):
        check_output_root(tmp_path / "other")


# --- numeric settings of a request ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        (WebEditSettings(guidance_scale=1e308), "guidance_scale (text) must be from 0 to 30"),
        (WebEditSettings(image_guidance_scale=-1e6), "image_guidance_scale must be from 0 to 30"),
        (WebEditSettings(guidance_scale=float("inf")), "guidance_scale (text) must be a finite number"),
        (WebEditSettings(strength=float("nan")), "strength must lie strictly between 0 and 1"),
    ],
)
def test_every_numeric_setting_of_a_request_is_bounded(web_pipeline, tmp_path, settings, message):
    session = EditSession(web_pipeline, tmp_path / "out")
    with pytest.raises(RequestError) as refused:
        session.edit(portrait(0), ["add eyeglasses"], settings)
    assert message in str(refused.value)
    assert list(session.requests_dir.iterdir()) == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({"guidance_scale": 1e308}, "guidance_scale (text) must be from 0 to 30"),
        ({"image_guidance_scale": -1e6}, "image_guidance_scale must be from 0 to 30"),
    ],
)
def test_the_pipeline_refuses_guidance_outside_its_bounds(web_pipeline, options, message):
    with pytest.raises(ValueError) as refused:
        web_pipeline(portrait(0), "add eyeglasses", **options)
    assert message in str(refused.value)


def test_huge_guidance_through_the_api_is_a_message(server):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, session = server
    example = session.output_root / "examples" / "example_0.png"
    client = Client(url, verbose=False)
    try:
        with pytest.raises(AppError) as refused:
            client.predict(
                handle_file(str(example)),
                "add eyeglasses",
                align=False,
                chain=False,
                strength=0.3,
                text_scale=1e308,
                image_scale=1.0,
                steps=10,
                seed=1,
                views=1,
                video=False,
                mesh=False,
                api_name="/edit",
            )
    finally:
        client.close()
    assert "must be from 0 to 30" in str(refused.value)


# --- the command ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--max-upload-mb", "nan"],
            "the upload limit must be a number above 0 and at most 1024 MB, got nan",
        ),
        (["--max-upload-mb", "1e9"], "at most 1024 MB"),
        (["--timeout", "inf"], "the request time limit must be positive and at most 86400 s"),
        (["--keep", "1000000000"], "at most 100000"),
        (["--queue-size", "100000000"], "queue size must be at least 1 and at most 10000"),
    ],
)
def test_serve_options_are_bounded_before_the_models_load(options, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(EditPipeline, "from_preset", lambda *args, **kwargs: pytest.fail("loaded a model"))
    assert main(["serve", "-o", str(tmp_path / "out"), *options]) == 2
    assert message in capsys.readouterr().err


def test_serve_keeps_sigpipe_ignored(web_pipeline, tmp_path, monkeypatch, capsys):
    """A client that stops reading must not kill the server: SIGPIPE stays ignored while it serves."""
    seen = []
    monkeypatch.setattr(EditPipeline, "from_preset", lambda *args, **kwargs: web_pipeline)

    def serve_once(app):
        seen.append(signal.getsignal(signal.SIGPIPE))
        app.close()

    monkeypatch.setattr("gradio.Blocks.block_thread", serve_once)
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # Python's default
    try:
        assert main(["serve", "--port", str(_free_port()), "-o", str(tmp_path / "out")]) == 0
    finally:
        signal.signal(signal.SIGPIPE, previous)
    assert seen == [signal.SIG_IGN]
    assert "ip2n serve:" in capsys.readouterr().out
