"""``sample``: upload field images to the host (``edgeloop fleet sample``).

They come from the field-sample reservoir when serving keeps one (a uniform sample of what the
device served), else from ``field_dir``, the eval set, or the golden images, in that order. The
count is bounded by the command (at most 1,000) and each image by ``MAX_UPLOAD_BYTES``. Each upload
carries the device's upload token (``upload_token_file``), which the host checks against the fleet and
device it names.
"""

from __future__ import annotations

import random
import urllib.request
from pathlib import Path

from device.commands.base import AgentContext, CommandHandler, register
from shared import datasets
from shared.errors import EdgeloopError
from shared.protocol import SampleCommand
from shared.samples import golden_dir

MAX_UPLOAD_BYTES = 1 << 20  # the host's upload limit


def field_images(agent: AgentContext) -> tuple[str, list[Path]]:
    """Where this device's field images are, and which files (what ``sample`` and ``recalibrate`` use)."""
    if agent.serving is not None and agent.serving.reservoir is not None:
        files = agent.serving.reservoir.files()
        if files:
            return "reservoir", files
    source = agent.config.field_dir or agent.config.eval_dir or golden_dir()
    files = sorted(p for p in Path(source).rglob("*") if p.suffix.lower() in datasets.IMAGE_SUFFIXES)
    return str(source), files


def _upload(agent: AgentContext, cmd: SampleCommand, path: Path, token: str | None) -> None:
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Edgeloop-Device": agent.device_id,
        "X-Edgeloop-Fleet": agent.fleet,
        "X-Edgeloop-Filename": path.name,
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(  # noqa: S310  (URL pattern-checked http(s))
        cmd.upload_url, data=path.read_bytes(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=agent.config.http_timeout_s):  # noqa: S310
            pass
    except OSError as e:
        raise EdgeloopError(f"upload to {cmd.upload_url} failed: {e}") from e


@register
class SampleHandler(CommandHandler):
    kind = "sample"

    def handle(self, agent: AgentContext, cmd: SampleCommand) -> None:
        source, files = field_images(agent)
        files = [f for f in files if f.stat().st_size <= MAX_UPLOAD_BYTES]
        if not files:
            raise EdgeloopError(f"no field images under {source}")
        picked = random.sample(files, min(cmd.n_images, len(files)))
        token = agent.config.upload_credential()
        for path in picked:
            _upload(agent, cmd, path, token)
        agent.event(
            "info", "samples_uploaded", f"uploaded {len(picked)} field images from {source}", command_id=cmd.message_id
        )
