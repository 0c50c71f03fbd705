"""What JetPack 6's Python 3.10 lacks and later Pythons have: one place, so the rest reads as 3.11+.

* ``tomllib`` (3.11+) is ``tomli`` on 3.10 (the same parser, which 3.11 took into the standard library).
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

__all__ = ["tomllib"]
