"""Which telemetry source to read: jtop where jetson-stats is installed and its service answers,
``tegrastats`` otherwise, nothing off a Jetson."""

from __future__ import annotations

import logging

from device.engine.jetson import tegrastats
from device.engine.jetson.jtop import JtopStream, JtopUnavailableError, jtop_class
from device.engine.jetson.sample import Sample, SampleStream
from device.engine.jetson.tegrastats import TegrastatsStream

log = logging.getLogger(__name__)


def open_stream(interval_ms: int = 100) -> SampleStream | None:
    """A started stream from the best source there is, None where there is none. The caller stops it."""
    if jtop_class() is not None:
        stream: SampleStream = JtopStream(interval_ms)
        try:
            stream.start()
            return stream
        except JtopUnavailableError as e:
            log.info("%s; reading tegrastats instead", e)
    if not tegrastats.available():
        return None
    stream = TegrastatsStream(interval_ms)
    try:
        stream.start()
    except OSError as e:
        log.warning("tegrastats could not be started: %s", e)
        return None
    return stream


def read_sample(timeout: float = 3.0) -> Sample | None:
    """One sample from the best source, None off a Jetson (or when the source printed nothing in time)."""
    stream = open_stream(interval_ms=500)
    if stream is None:
        return None
    try:
        return stream.latest() or stream.wait_sample(timeout)
    finally:
        stream.stop()
