"""Golden image set shipped as package data (see shared/samples/README.md)."""

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent


def golden_dir() -> Path:
    """The ImageFolder directory of the golden set."""
    return SAMPLES_DIR
