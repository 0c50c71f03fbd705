"""The demo's field act, the parts that need no fleet: the split of the golden set, the next version."""

from __future__ import annotations

from pathlib import Path

from host.demo.adapt import next_version
from host.demo.field import HELD_OUT_DRAWS, NIGHT_DRAWS, SAMPLE, field_data
from host.fleet.release import ReleaseStore
from shared import datasets


def test_the_held_out_scenes_are_never_served(tmp_path: Path, golden_dir: Path) -> None:
    data = field_data(tmp_path)
    day = datasets.list_samples(data.day)
    held_out_day = datasets.list_samples(tmp_path / "field" / "held-out" / "day")
    golden = datasets.list_samples(golden_dir)
    assert len(day) + len(held_out_day) == len(golden)
    assert not {Path(s.source).name for s in day} & {Path(s.source).name for s in held_out_day}
    # every class on both sides, half of its images each
    assert {s.class_name for s in day} == {s.class_name for s in held_out_day} == {s.class_name for s in golden}
    assert abs(len(day) - len(held_out_day)) <= len({s.class_name for s in golden})
    # the night frames: labelled copies, so many draws of each scene; the device's reservoir holds all it serves
    assert len(datasets.list_samples(data.night / "draw-0")) == len(day)
    assert len(list(data.night.glob("draw-*"))) == NIGHT_DRAWS
    assert len(list(data.held_out.glob("draw-*"))) == HELD_OUT_DRAWS
    assert len(day) * (1 + NIGHT_DRAWS) == SAMPLE
    # made once per work directory
    before = {p: p.stat().st_mtime_ns for p in data.held_out.rglob("*.png")}
    assert field_data(tmp_path) == data
    assert {p: p.stat().st_mtime_ns for p in data.held_out.rglob("*.png")} == before


def test_the_field_release_takes_the_next_free_version(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path)
    assert next_version(store, "resnet20") == "1.2.0"
    for v in ("1.1.0", "1.2.0", "1.2.1"):
        path = store.manifest_path("resnet20", v)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert next_version(store, "resnet20") == "1.2.2"
