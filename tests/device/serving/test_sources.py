from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np

from device.serving.batcher import Answer, ServingError
from device.serving.config import DirectorySource, VideoSource
from device.serving.sources import create
from shared import imaging


def _fake_answer(image: np.ndarray, raw: bytes | None) -> Answer:
    return Answer(0, "airplane", 0.9, [("airplane", 0.9)], 1.0, "r@1")


def test_a_watched_folder_classifies_each_new_file_once(tmp_path: Path, golden_dir: Path) -> None:
    watched = tmp_path / "in"
    watched.mkdir()
    published: list[tuple[str, int]] = []
    errors: list[str] = []
    got = threading.Event()

    def publish(source: str, frame: int, answer: Answer) -> None:
        published.append((source, frame))
        if len(published) >= 3:
            got.set()

    src = create(DirectorySource(path=watched, fps=100), _fake_answer, publish, errors.append)
    src.start()
    try:
        for f in sorted(golden_dir.rglob("*.jpg"))[:3]:
            shutil.copy(f, watched / f.name)
        (watched / "broken.jpg").write_bytes(b"\xff\xd8 half a jpeg")
        assert got.wait(10)
        time.sleep(0.8)  # another scan: nothing is classified twice
    finally:
        src.stop()
    assert [n for _, n in published] == [1, 2, 3]
    assert published[0][0] == str(watched)
    assert errors == ["not_image"]


def test_a_video_file_is_read_frame_by_frame(tmp_path: Path) -> None:
    cv2 = imaging.opencv()
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for i in range(5):
        writer.write(np.full((32, 32, 3), i * 40, dtype=np.uint8))
    writer.release()
    frames: list[int] = []
    done = threading.Event()

    def publish(source: str, frame: int, answer: Answer) -> None:
        frames.append(frame)
        if frame == 5:
            done.set()

    src = create(VideoSource(uri=str(path), fps=200), _fake_answer, publish, lambda k: None)
    src.start()
    try:
        assert done.wait(10)
    finally:
        src.stop()
    assert frames[:5] == [1, 2, 3, 4, 5]


def test_serving_errors_are_counted_and_the_source_goes_on(tmp_path: Path, golden_dir: Path) -> None:
    watched = tmp_path / "in"
    watched.mkdir()
    errors: list[str] = []
    seen = threading.Event()

    def refuse(image: np.ndarray, raw: bytes | None) -> Answer:
        seen.set()
        raise ServingError("overloaded", "busy", 503)

    src = create(DirectorySource(path=watched, fps=100), refuse, lambda *a: None, errors.append)
    src.start()
    try:
        shutil.copy(next(golden_dir.rglob("*.jpg")), watched / "a.jpg")
        assert seen.wait(10)
        time.sleep(0.2)
    finally:
        src.stop()
    assert errors == ["overloaded"] and src.frames == 0
