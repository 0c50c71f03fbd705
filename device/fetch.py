"""Artifact download over HTTP(S): size limit, resume (HTTP Range), sha256 check, atomic install.

The stdlib's urllib is enough here: one GET with an optional Range header, streamed to a
``.part`` file; nothing reaches the content-addressed store until its sha256 matches.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlparse

from shared.digest import sha256_file
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

CHUNK = 1 << 16


class FetchError(EdgeloopError):
    """A download that failed its checks; ``code`` goes into the EventReport."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def resolve_url(url: str, base_url: str | None) -> str:
    if urlparse(url).scheme in ("http", "https"):
        return url
    if not base_url:
        raise FetchError("artifact_url_invalid", f"relative artifact URL {url!r} and no base URL to resolve it")
    full = urljoin(base_url.rstrip("/") + "/", url)
    if urlparse(full).scheme not in ("http", "https"):
        raise FetchError("artifact_url_invalid", f"artifact URL {full!r} is not http(s)")
    return full


def fetch(
    url: str,
    dest: Path,
    sha256: str,
    size: int,
    max_bytes: int,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` unless an identical file is already there.

    Resumes a previous partial download; raises FetchError (too large, truncated, sha256
    mismatch, HTTP error) and never leaves a bad file at ``dest``.
    """
    if size > max_bytes:
        raise FetchError("artifact_too_large", f"artifact is {size:,} bytes; the limit is {max_bytes:,}")
    if dest.is_file() and dest.stat().st_size == size and sha256_file(dest) == sha256:
        log.info("artifact %s already present", dest.name)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have < size:
        _download(url, part, have, size, max_bytes, timeout, headers or {})
    got = part.stat().st_size
    if got != size:
        raise FetchError("artifact_truncated", f"download of {url} ended at {got:,} of {size:,} bytes")
    digest = sha256_file(part)
    if digest != sha256:
        part.unlink()  # a wrong file must not be resumed from
        raise FetchError("artifact_sha256_mismatch", f"sha256 of {url} is {digest}, the manifest says {sha256}")
    os.replace(part, dest)
    return dest


def _download(
    url: str, part: Path, have: int, size: int, max_bytes: int, timeout: float, headers: dict[str, str]
) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "edgeloop-agent", **headers})  # noqa: S310
    if have:
        req.add_header("Range", f"bytes={have}-")
        log.info("resuming %s at byte %d", url, have)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310  (scheme checked by resolve_url)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: start over
            part.unlink()
            _download(url, part, 0, size, max_bytes, timeout, headers)
            return
        raise FetchError("artifact_http_error", f"GET {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise FetchError("artifact_unreachable", f"GET {url}: {getattr(e, 'reason', e)}") from e
    with resp:
        mode = "ab" if have and resp.status == 206 else "wb"
        written = have if mode == "ab" else 0
        length = resp.headers.get("Content-Length")
        if length is not None and written + int(length) > max_bytes:
            raise FetchError("artifact_too_large", f"server sends {int(length):,} bytes; the limit is {max_bytes:,}")
        try:
            with part.open(mode) as f:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    written += len(block)
                    if written > max_bytes or written > size:
                        f.close()
                        part.unlink()
                        raise FetchError("artifact_too_large", f"{url} sends more than the manifest's {size:,} bytes")
                    f.write(block)
        except (OSError, http.client.HTTPException) as e:
            raise FetchError("artifact_truncated", f"download of {url} broke off at {written:,} bytes: {e}") from e
