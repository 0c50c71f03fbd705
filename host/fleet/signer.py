"""The host's command signature: every command it sends is signed with ``edgeloop serve --command-key``.

Devices refuse unsigned or forged commands (``require_command_signature``, on by default), so a
host without a key can still run rollouts only against devices that switched that off: it says so
at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

from shared import signing
from shared.protocol import SignedCommand

log = logging.getLogger(__name__)

C = TypeVar("C", bound=SignedCommand)


class CommandSigner:
    def __init__(self, key_path: Path | None) -> None:
        self._key = signing.load_private_key(key_path) if key_path is not None else None
        self.key_id = signing.key_id(self._key.public_key()) if self._key is not None else None
        if self._key is None:
            log.warning("no --command-key: commands go out unsigned, and devices that require signatures refuse them")

    def sign(self, cmd: C) -> C:
        return signing.sign(cmd, self._key) if self._key is not None else cmd
