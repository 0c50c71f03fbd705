"""The sha256 of a file, read in 1 MiB blocks (artifacts can be larger than a small device's free memory).

``hashlib.file_digest`` does this from Python 3.11; JetPack 6 runs 3.10.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
