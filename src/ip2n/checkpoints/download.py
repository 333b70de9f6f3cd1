"""`ip2n weights download`: fetch the official files, convert them and check them.

Where each file comes from is the table in `ip2n.weight_sources` (`OFFICIAL_FILES`, with the page
that publishes each link; docs/models.md has a model card per file). "url" and "gdrive" files are
fetched with gdown, which resumes an interrupted download from its partial file (`<name>…part`
beside the file) with an HTTP Range request; "hf" files with huggingface_hub, which resumes its own
way; "browser" files (share pages that cannot be scripted) are announced with their link and the
exact file name to save, then awaited. Sizes and SHA-256 digests are checked where the table knows
them, and every fetched file's digest is kept in OUT/official/SHA256SUMS; that each file holds the
expected networks is checked by `ip2n weights check`, which runs after the conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ip2n.atomic import write_text_atomic
from ip2n.checkpoints.editing_weights import (
    WEIGHT_FILES,
    EditingPresets,
    check_weights_dir,
    convert_editing_models,
    find_weights_file,
)
from ip2n.checkpoints.generator_weights import convert_generator
from ip2n.checkpoints.safe_unpickle import CheckpointError
from ip2n.weight_sources import (
    DEFAULT_WAIT_SECONDS,
    FETCH_ORDER,
    OFFICIAL_FILES,
    OfficialFile,
    default_choices,
)

OFFICIAL_SUBDIR = "official"  # DIR/official holds the downloaded files, DIR the converted ones
CHECKSUMS_NAME = "SHA256SUMS"
# Where gdown fetches a Google Drive file id from (a constant, so tests can point it at a local server).
DRIVE_URL = "https://drive.google.com/uc?id={id}"
# Names a browser gives a file while it is still downloading it (Firefox keeps an empty final file
# beside its .part; Chrome and Safari write under another name and rename at the end).
BROWSER_PARTIAL_SUFFIXES = (".part", ".crdownload", ".download", ".opdownload")
POLL_SECONDS = 5.0
DOWNLOAD_RETRIES = 3


@dataclass
class DownloadResult:
    """What `download_weights` did."""

    official_dir: Path
    out_dir: Path
    present: dict[str, Path] = field(default_factory=dict)  # component → file in official_dir
    missing: list[OfficialFile] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # component → why
    converted: list[Path] = field(default_factory=list)
    checks_ok: bool = False

    @property
    def ok(self) -> bool:
        return not self.missing and not self.failed and self.checks_ok


class DownloadFailed(Exception):
    """A file could not be fetched or failed its size / digest check."""


def download_weights(
    out_dir: str | os.PathLike,
    *,
    choices: Mapping[str, str] | None = None,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    downloads_dir: str | os.PathLike | None = None,
    poll_seconds: float = POLL_SECONDS,
    presets: EditingPresets | None = None,
    convert: bool = True,
    say: Callable[[str], None] = print,
) -> DownloadResult:
    """Fetch every official file into OUT/official, convert them into OUT and check OUT.

    Files already in OUT/official are kept. `choices` picks a source per component (see
    `OFFICIAL_FILES`). Files only a browser can fetch are announced with their link and file name;
    they are awaited in OUT/official and in `downloads_dir` (moved from there) for `wait_seconds`.
    """
    selected = {**default_choices(), **(choices or {})}
    out = Path(out_dir)
    official = out / OFFICIAL_SUBDIR
    official.mkdir(parents=True, exist_ok=True)
    result = DownloadResult(official, out)
    files = {component: OFFICIAL_FILES[component][choice] for component, choice in selected.items()}
    waiting: list[OfficialFile] = []
    for component in FETCH_ORDER:
        file = files[component]
        _fetch_or_queue(file, official, result, waiting, say)
    if waiting:
        _await_browser_files(waiting, official, downloads_dir, wait_seconds, poll_seconds, result, say)
    if "dit" in result.present and not _text_tower_available(official):
        _fetch_or_queue(files["text_encoder"], official, result, [], say)
    if result.missing or result.failed:
        return result
    if convert:
        result.converted = _convert(official, out, presets or EditingPresets(), say)
        reports = check_weights_dir(out, presets or EditingPresets())
        for report in reports:
            status = "ok     " if report.ok else "PROBLEM"
            say(f"[{status}] {report.name}: " + report.summary.replace("\n", "\n          "))
        result.checks_ok = all(report.ok for report in reports)
    else:
        result.checks_ok = True
    return result


def _fetch_or_queue(
    file: OfficialFile,
    official: Path,
    result: DownloadResult,
    waiting: list[OfficialFile],
    say: Callable[[str], None],
) -> None:
    target = official / file.name
    if target.is_file() and target.stat().st_size > 0:
        try:
            verify(file, target)
        except DownloadFailed as exc:
            result.failed[file.component] = str(exc)
            return
        say(f"{file.name}: already in {official}")
        result.present[file.component] = target
        return
    if file.host.kind == "browser":
        waiting.append(file)
        return
    say(f"{file.name}: {file.what}\n  from {file.host.link()}" + _caveats(file))
    try:
        fetch(file, official)
    except DownloadFailed as exc:
        result.failed[file.component] = str(exc)
        say(f"{file.name}: FAILED: {exc}")
        return
    result.present[file.component] = target


def fetch(file: OfficialFile, official: Path) -> Path:
    """Download `file` into `official` (resuming a partial download), verify it, record its digest."""
    target = official / file.name
    digest = hashlib.sha256()
    if file.host.kind in ("url", "gdrive"):
        import gdown

        url = DRIVE_URL.format(id=file.host.location) if file.host.kind == "gdrive" else file.host.location
        try:
            gdown.download(
                url=url,
                output=str(target),
                resume=True,
                retries=DOWNLOAD_RETRIES,
                use_cookies=False,  # nothing written to ~/.cache; the session keeps its own
                hasher=digest,
            )
        except Exception as exc:  # noqa: BLE001 - gdown and requests raise many kinds; all mean "not fetched"
            raise DownloadFailed(
                f"could not fetch {url} ({type(exc).__name__}: {exc}); run the command again to resume, or "
                f"download {file.host.link()} yourself and save it as {target}"
            ) from exc
    elif file.host.kind == "hf":
        from huggingface_hub import hf_hub_download

        try:
            fetched = Path(hf_hub_download(file.host.location, file.host.filename, local_dir=official))
        except Exception as exc:  # noqa: BLE001 - the Hub client raises many kinds; all mean "not fetched"
            raise DownloadFailed(
                f"could not fetch {file.host.filename} from the Hugging Face model {file.host.location} "
                f"({type(exc).__name__}: {exc}); run the command again to resume"
            ) from exc
        if fetched.resolve() != target.resolve():
            os.replace(fetched, target)
        digest = _sha256_of(target)
    else:
        raise ValueError(f"{file.name} is fetched in a browser, not by a script")
    verify(file, target, digest.hexdigest())
    record_digest(official, file.name, digest.hexdigest())
    return target


def verify(file: OfficialFile, path: Path, sha256: str | None = None) -> None:
    """Check `path` against the size and digest the table knows for `file`; a file that fails is
    renamed to `<name>.rejected` (so the next run fetches it again) and `DownloadFailed` raised."""
    problem = None
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        problem = f"it has {size} bytes, the published file {file.size}"
    elif file.sha256 is not None:
        actual = sha256 or _sha256_of(path).hexdigest()
        if actual != file.sha256:
            problem = f"its SHA-256 is {actual}, the published file's {file.sha256}"
    if problem:
        rejected = path.with_name(path.name + ".rejected")
        os.replace(path, rejected)
        raise DownloadFailed(
            f"{path.name} is not the published file: {problem}. It was moved to {rejected}; run the command "
            f"again to fetch it anew (from {file.host.link()})"
        )


def record_digest(official: Path, name: str, sha256: str) -> None:
    """Keep `name`'s SHA-256 in official/SHA256SUMS (the `sha256sum -c` format)."""
    path = official / CHECKSUMS_NAME
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    kept = [line for line in lines if not line.endswith(f"  {name}")]
    write_text_atomic(path, "".join(f"{line}\n" for line in [*kept, f"{sha256}  {name}"]))


def _caveats(file: OfficialFile) -> str:
    """The host's note, and a warning when its location could not be confirmed at its publisher."""
    text = ""
    if not file.host.confirmed:
        text += f"\n  (link not confirmed: published by {file.host.published_by})"
    if file.host.note:
        text += f"\n  note: {file.host.note}"
    return text


def _sha256_of(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def browser_instructions(files: Iterable[OfficialFile], official: Path, downloads_dir: Path | None) -> str:
    """What the user has to do for files only a browser can fetch."""
    lines = ["These files are published on a share page that cannot be downloaded by a script:"]
    for file in files:
        lines += [
            f"  - {file.what}",
            f"      open   {file.host.link()}  in a browser and download it",
            f"      save   {official / file.name}",
        ]
        lines += [f"      {line}" for line in _caveats(file).splitlines() if line.strip()]
    if downloads_dir is not None:
        lines.append(
            f"  (or leave them in {downloads_dir} under those names: ip2n moves them into {official})"
        )
    return "\n".join(lines)


def _await_browser_files(
    files: list[OfficialFile],
    official: Path,
    downloads_dir: str | os.PathLike | None,
    wait_seconds: float,
    poll_seconds: float,
    result: DownloadResult,
    say: Callable[[str], None],
) -> None:
    downloads = Path(downloads_dir) if downloads_dir is not None else None
    say(browser_instructions(files, official, downloads))
    if wait_seconds > 0:
        wait = f"{wait_seconds / 60:.0f} min" if wait_seconds >= 120 else f"{wait_seconds:.0f} s"
        say(
            f"Waiting up to {wait} for them (Ctrl-C stops; running the command again picks up where it "
            "stopped) ..."
        )
    deadline = time.monotonic() + wait_seconds
    sizes: dict[Path, int] = {}
    pending = list(files)
    while True:
        for file in list(pending):
            found = _finished_file(file.name, [official] + ([downloads] if downloads else []), sizes)
            if found is None:
                continue
            target = official / file.name
            if found != target:
                _move_into(found, target)
            pending.remove(file)
            try:
                verify(file, target)
            except DownloadFailed as exc:
                result.failed[file.component] = str(exc)
                say(f"{file.name}: FAILED: {exc}")
                continue
            say(f"{file.name}: found, in {official}")
            result.present[file.component] = target
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_seconds)
    for file in pending:
        result.missing.append(file)


def _finished_file(name: str, folders: list[Path], sizes: dict[Path, int]) -> Path | None:
    """`name` in one of `folders` once a browser has finished writing it: non-empty, no partial file
    beside it, and the same size as at the previous poll."""
    for folder in folders:
        path = folder / name
        if not path.is_file() or any(
            (folder / (name + suffix)).exists() for suffix in BROWSER_PARTIAL_SUFFIXES
        ):
            continue
        size = path.stat().st_size
        previous = sizes.get(path)
        sizes[path] = size
        if size > 0 and previous == size:
            return path
    return None


def _move_into(source: Path, target: Path) -> None:
    """Move a file (across file systems too) so that `target` appears complete or not at all."""
    staging = target.with_name(f".{target.name}.moving")
    try:
        os.replace(source, target)
        return
    except OSError:
        pass
    shutil.copyfile(source, staging)
    os.replace(staging, target)
    source.unlink()


def _text_tower_available(official: Path) -> bool:
    """The DiT file embeds the OpenCLIP text tower, or an OpenCLIP file is there."""
    try:
        find_weights_file("text_encoder", official)
    except CheckpointError:
        return False
    return True


def _convert(official: Path, out: Path, presets: EditingPresets, say: Callable[[str], None]) -> list[Path]:
    """`ip2n weights convert OUT/official -o OUT`, skipped when every converted file is newer."""
    sources = [path for path in official.iterdir() if path.is_file() and path.name != CHECKSUMS_NAME]
    newest = max(path.stat().st_mtime for path in sources)
    converted = [out / files.converted for files in WEIGHT_FILES.values()]
    if all(path.is_file() and path.stat().st_mtime >= newest for path in converted):
        say(f"converted files in {out} are up to date")
        return []
    say(f"converting {official} → {out} (safetensors + JSON) ...")
    names = WEIGHT_FILES["generator"].official
    generators = [official / name for name in names if (official / name).is_file()]
    written = convert_generator(generators[0], out) if generators else []
    written += convert_editing_models(official, out, presets)
    for path in written:
        config = path.with_suffix(".json")
        source = json.loads(config.read_text()).get("source", "") if config.is_file() else ""
        say(f"  {path}" + (f" (from {source})" if source else ""))
    return written
