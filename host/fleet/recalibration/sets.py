"""Calibration sets the host serves: a folder of images on the host, packed as a .tar.gz that devices download.

``edgeloop recalibrate --calib-data DIR`` names a folder on the machine that runs ``edgeloop serve``;
the server packs its image files (by suffix, recursively, symlinks skipped) into
``RELEASES/calibration-sets/<sha256>.tar.gz``, content-addressed and byte-for-byte reproducible
(sorted names, zeroed times and owners), so the same folder is packed once and a device can trust
what it fetched by its name. The command then carries the file's absolute URL (``source = "url"``);
the device downloads it with its artifact size limit and checks every image (device.commands.calibration_sources).
"""

from __future__ import annotations

import gzip
import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from shared import datasets
from shared.digest import sha256_file
from shared.errors import EdgeloopError

NAME = re.compile(r"^[0-9a-f]{64}\.tar\.gz$")
MAX_BYTES = 1 << 30  # a set this large is not a calibration set; the devices' own limit is usually lower


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively, regular files only), sorted."""
    if not folder.is_dir():
        raise EdgeloopError(f"--calib-data {folder} is not a folder on the host that runs `edgeloop serve`")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in datasets.IMAGE_SUFFIXES and p.is_file() and not p.is_symlink()
    )


class CalibrationSets:
    def __init__(self, root: Path) -> None:
        self.root = root

    def pack(self, folder: Path) -> str:
        """Pack the images of ``folder``; returns the file's name (``<sha256>.tar.gz``)."""
        files = image_files(folder)
        if not files:
            raise EdgeloopError(f"--calib-data {folder} holds no images ({', '.join(sorted(datasets.IMAGE_SUFFIXES))})")
        total = sum(f.stat().st_size for f in files)
        if total > MAX_BYTES:
            raise EdgeloopError(f"--calib-data {folder} holds {total:,} bytes of images; at most {MAX_BYTES:,}")
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".set-", suffix=".tmp", dir=self.root)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as raw:
                _archive(raw, folder, files)
            name = f"{sha256_file(tmp)}.tar.gz"
            os.replace(tmp, self.root / name)  # the same folder packs to the same bytes: same name
        finally:
            tmp.unlink(missing_ok=True)
        return name

    def path(self, name: str) -> Path | None:
        """The file of a packed set (None for any other name)."""
        if not NAME.match(name):
            return None
        p = self.root / name
        return p if p.is_file() else None


def _archive(out: BinaryIO, folder: Path, files: list[Path]) -> None:
    """A reproducible .tar.gz of ``files``, named relative to ``folder``, written to ``out``."""
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for f in files:
            info = tarfile.TarInfo(f.relative_to(folder).as_posix())
            info.size, info.mode, info.mtime = f.stat().st_size, 0o644, 0
            with f.open("rb") as src:
                tar.addfile(info, src)
