"""Frame sources: what the agent classifies on its own, besides HTTP requests.

One ABC (``FrameSource``) and a registry keyed by the config's ``type``: ``video`` (OpenCV
``VideoCapture``: a camera index, a video file, an RTSP/HTTP stream) and ``directory`` (a watched
folder). A source runs in its own thread at its configured rate; every result goes to ``publish``
(the agent sends it on ``edgeloop/v1/{fleet}/{device}/result`` with QoS 0). A source that fails
(a camera unplugged, a stream down) is reopened with backoff; it never stops the agent.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from device.serving.batcher import Answer, ServingError
from device.serving.config import DirectorySource, SourceConfig, VideoSource
from shared import datasets, imaging
from shared.errors import EdgeloopError
from shared.imaging import U8Image

log = logging.getLogger(__name__)

Classify = Callable[[U8Image, bytes | None], Answer]
Publish = Callable[[str, int, Answer], None]  # source name, frame number, answer
CountError = Callable[[str], None]

_SOURCES: dict[str, type[FrameSource]] = {}


def register(cls: type[FrameSource]) -> type[FrameSource]:
    if cls.type in _SOURCES:
        raise ValueError(f"frame source {cls.type!r} registered twice")
    _SOURCES[cls.type] = cls
    return cls


def create(config: SourceConfig, classify: Classify, publish: Publish, count_error: CountError) -> FrameSource:
    try:
        cls = _SOURCES[config.type]
    except KeyError:
        raise EdgeloopError(f"unknown frame source {config.type!r}; known: {', '.join(_SOURCES)}") from None
    return cls(config, classify, publish, count_error)


class FrameSource(ABC):
    type: ClassVar[str]

    def __init__(self, config: Any, classify: Classify, publish: Publish, count_error: CountError) -> None:
        self.config = config
        self._classify, self._publish, self._count_error = classify, publish, count_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{self.type}", daemon=True)
        self.frames = 0
        self.failures = 0

    @property
    @abstractmethod
    def name(self) -> str:
        """What the results name as their source."""

    @abstractmethod
    def frames_iter(self) -> Iterator[tuple[U8Image, bytes | None]]:
        """Frames (RGB) with their encoded bytes when there are any; ends when the source does."""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                for image, raw in self.frames_iter():
                    if self._stop.is_set():
                        return
                    self._one(image, raw)
                    backoff = 1.0
                    self._stop.wait(1.0 / self.config.fps)
            except Exception as e:  # noqa: BLE001  (OpenCV and OS errors of any type: log, wait, reopen)
                self.failures += 1
                log.warning("frame source %s failed (%s); reopening in %.0f s", self.name, e, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(60.0, backoff * 2)

    def _one(self, image: U8Image, raw: bytes | None) -> None:
        try:
            answer = self._classify(image, raw)
        except ServingError as e:
            self._count_error(e.kind)
            return
        self.frames += 1
        self._publish(self.name, self.frames, answer)


@register
class VideoFrameSource(FrameSource):
    type: ClassVar[str] = "video"
    config: VideoSource

    @property
    def name(self) -> str:
        return self.config.uri

    def frames_iter(self) -> Iterator[tuple[U8Image, bytes | None]]:
        cv2 = imaging.opencv()
        uri: int | str = int(self.config.uri) if self.config.uri.isdigit() else self.config.uri
        cap = cv2.VideoCapture(uri)
        if not cap.isOpened():
            raise EdgeloopError(f"cannot open video source {self.config.uri!r}")
        try:
            while not self._stop.is_set():
                ok, frame = cap.read()
                if not ok:
                    if self.config.loop and isinstance(uri, str) and "://" not in uri:
                        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        continue
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), None
        finally:
            cap.release()


@register
class DirectoryFrameSource(FrameSource):
    type: ClassVar[str] = "directory"
    config: DirectorySource

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._done: set[Path] = set()

    @property
    def name(self) -> str:
        return str(self.config.path)

    def _settled(self) -> list[Path]:
        """New image files not written to for ``settle_s`` (a copy still in progress is not read)."""
        now = time.time()
        out = []
        for p in self.config.path.glob("*"):
            if p.suffix.lower() not in datasets.IMAGE_SUFFIXES or p in self._done:
                continue
            try:
                st = p.stat()
            except OSError:  # gone between glob and stat
                continue
            if st.st_size > 0 and now - st.st_mtime >= self.config.settle_s:
                out.append(p)
        return sorted(out)

    def frames_iter(self) -> Iterator[tuple[U8Image, bytes | None]]:
        while not self._stop.is_set():
            self._done = {p for p in self._done if p.exists()}  # forget files that went away
            new = self._settled()
            for path in new:
                self._done.add(path)
                try:
                    data = path.read_bytes()
                    image = imaging.decode(data, strict=True)
                except (OSError, EdgeloopError) as e:  # a half-written or broken file: count, go on
                    self._count_error("not_image")
                    log.warning("skipping %s: %s", path.name, e)
                    continue
                yield image, data
                if self.config.delete_after:
                    path.unlink(missing_ok=True)
            if not new:
                self._stop.wait(0.5)
