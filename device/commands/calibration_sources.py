"""Where a ``recalibrate`` takes its images: the field-sample reservoir, a folder on the device, or a
set the host serves (a .tar or .tar.gz of images, downloaded with the artifact size limit and
unpacked with tarfile's ``data`` filter: regular files only, nothing outside the target folder)."""

from __future__ import annotations

import tarfile
import urllib.request
from pathlib import Path

from device.engine.calibration.calibset import CalibrationSetError, image_files
from shared import datasets

CHUNK = 1 << 16


def download_set(url: str, dest: Path, max_bytes: int, timeout: float) -> list[Path]:
    """Fetch and unpack a served calibration set into ``dest``; its image files."""
    archive = dest / "set.tar"
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, archive.open("wb") as f:  # noqa: S310  (http(s) by the command's pattern)
            while block := resp.read(CHUNK):
                size += len(block)
                if size > max_bytes:
                    raise CalibrationSetError("calibration_set_too_large", f"{url} is over {max_bytes:,} bytes")
                f.write(block)
    except OSError as e:
        raise CalibrationSetError("calibration_set_unreachable", f"cannot download {url}: {e}") from e
    try:
        with tarfile.open(archive) as tar:
            members = [
                m for m in tar.getmembers() if m.isfile() and Path(m.name).suffix.lower() in datasets.IMAGE_SUFFIXES
            ]
            tar.extractall(dest / "images", members=members, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise CalibrationSetError("calibration_set_unreadable", f"{url} is not a readable .tar(.gz): {e}") from e
    return image_files(dest / "images")
