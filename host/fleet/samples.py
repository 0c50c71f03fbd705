"""Field samples the host asked a device for (``edgeloop fleet sample``): one folder per ``sample`` command.

Layout, under the server's upload folder::

    UPLOADS/<fleet>/<device>/<command id>/request.json   what was asked: how many images, when
    UPLOADS/<fleet>/<device>/<command id>/0000.jpg ...   what arrived, numbered in order of arrival

A device may only upload into a request the host made for it, and only as many images as the
command asked for; every name on disk is ours (ids checked against the wire pattern, the command
id parsed as a UUID), never the client's.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shared import protocol
from shared.errors import EdgeloopError
from shared.protocol import utcnow

IMAGE_SUFFIXES = (".jpg", ".png", ".bmp", ".webp")  # what shared.imageheader takes
_REQUEST = "request.json"


class SampleUploadError(EdgeloopError):
    """An upload the host did not ask for (``status`` is the HTTP answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SampleRequest:
    command_id: str
    fleet: str
    device_id: str
    n_images: int
    created_at: datetime


def command_id_of(text: str) -> str:
    """The canonical form of a command id (a UUID), or SampleUploadError(400)."""
    try:
        return str(uuid.UUID(text))
    except (ValueError, TypeError, AttributeError):
        raise SampleUploadError(400, f"command id {text!r} is not a UUID") from None


class FieldSamples:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()  # counts and names of uploads into one request stay consistent

    def folder(self, fleet: str, device: str, command_id: str) -> Path:
        fleet = protocol.check_id(fleet, "fleet")
        device = protocol.check_id(device, "device")
        return self.root / fleet / device / command_id_of(command_id)

    def create(self, fleet: str, device: str, command_id: str, n_images: int) -> SampleRequest:
        req = SampleRequest(command_id_of(command_id), fleet, device, n_images, utcnow())
        d = self.folder(fleet, device, command_id)
        d.mkdir(parents=True, exist_ok=False)
        record = {"command_id": req.command_id, "n_images": n_images, "created_at": req.created_at.isoformat()}
        (d / _REQUEST).write_text(json.dumps(record) + "\n")
        return req

    def cancel(self, fleet: str, device: str, command_id: str) -> None:
        """Forget a request (its command could not be sent)."""
        shutil.rmtree(self.folder(fleet, device, command_id), ignore_errors=True)

    def request(self, fleet: str, device: str, command_id: str) -> SampleRequest | None:
        f = self.folder(fleet, device, command_id) / _REQUEST
        if not f.is_file():
            return None
        data = json.loads(f.read_text())
        return SampleRequest(
            data["command_id"], fleet, device, int(data["n_images"]), datetime.fromisoformat(data["created_at"])
        )

    def files(self, fleet: str, device: str, command_id: str) -> list[str]:
        """The images that arrived for a request, in order of arrival."""
        d = self.folder(fleet, device, command_id)
        return sorted(p.name for p in d.iterdir() if p.suffix in IMAGE_SUFFIXES) if d.is_dir() else []

    def path(self, fleet: str, device: str, command_id: str, name: str) -> Path | None:
        """The file of one image of a request (None unless it is one of ``files``)."""
        if name not in self.files(fleet, device, command_id):
            return None
        return self.folder(fleet, device, command_id) / name

    def check_open(self, fleet: str, device: str, command_id: str) -> SampleRequest:
        """The request an upload answers, if it still wants images (else SampleUploadError)."""
        req = self.request(fleet, device, command_id)
        if req is None:
            raise SampleUploadError(404, f"no sample request {command_id} for {fleet}/{device}")
        if len(self.files(fleet, device, command_id)) >= req.n_images:
            raise SampleUploadError(
                409, f"sample request {command_id} asked for {req.n_images} images and has them all"
            )
        return req

    def add(self, fleet: str, device: str, command_id: str, body: bytes, suffix: str) -> str:
        """Store one uploaded image of a request under the next number; returns its name."""
        if suffix not in IMAGE_SUFFIXES:
            raise SampleUploadError(415, f"field images are stored as {', '.join(IMAGE_SUFFIXES)}")
        with self._lock:
            self.check_open(fleet, device, command_id)
            d = self.folder(fleet, device, command_id)
            name = f"{len(self.files(fleet, device, command_id)):04d}{suffix}"
            tmp = d / f".{name}.tmp"
            tmp.write_bytes(body)
            os.replace(tmp, d / name)
        return name
