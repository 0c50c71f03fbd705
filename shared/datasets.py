"""Labelled image sets: ImageFolder trees (one folder per class), their .tar.gz, CIFAR-10 python batches.

The class order is fixed by the model (stored in its card/manifest), never by whatever order the
filesystem returns: a dataset is always mapped onto the model's class list by folder name.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from shared import imaging
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class Sample:
    """One labelled image not decoded yet: where its bytes are and which class it is."""

    source: str  # a file path, or "archive.tar.gz::member"
    class_name: str


@dataclass
class LabelledImages:
    """Decoded images, RGB uint8 NHWC, with integer labels in ``classes`` order."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def split_spec(spec: str | Path) -> tuple[Path, str]:
    """``data.tar.gz::test`` -> (data.tar.gz, "test"); a plain path -> (path, "")."""
    text = str(spec)
    if "::" in text:
        path, sub = text.split("::", 1)
        return Path(path), sub.strip("/")
    return Path(text), ""


def list_samples(spec: str | Path) -> list[Sample]:
    """List the labelled images of an ImageFolder directory or a .tar(.gz) of one.

    For an archive, ``archive.tar.gz::sub/dir`` selects a sub-tree (e.g. ``cifar10-jpeg.tar.gz::test``).
    """
    path, sub = split_spec(spec)
    if not path.exists():
        raise EdgeloopError(f"dataset not found: {path}")
    if path.is_dir():
        samples = _list_dir(path / sub if sub else path)
    elif tarfile.is_tarfile(path):
        samples = _list_tar(path, sub)
    else:
        raise EdgeloopError(f"{path} is neither a directory nor a tar archive of an image folder")
    if not samples:
        raise EdgeloopError(f"no images found in {spec}: expected one sub-folder per class holding JPEG/PNG files")
    return samples


def _list_dir(root: Path) -> list[Sample]:
    if not root.is_dir():
        raise EdgeloopError(f"dataset folder not found: {root}")
    samples: list[Sample] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in os.listdir(class_dir) if _is_image(f))
        samples.extend(Sample(str(class_dir / f), class_dir.name) for f in files)
    return samples


def _list_tar(path: Path, sub: str) -> list[Sample]:
    prefix = PurePosixPath(sub) if sub else None
    samples: list[Sample] = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not _is_image(member.name):
                continue
            rel = PurePosixPath(member.name.lstrip("./"))
            if prefix is not None:
                if prefix not in rel.parents:
                    continue
                rel = rel.relative_to(prefix)
            if len(rel.parts) < 2:
                continue
            samples.append(Sample(f"{path}::{member.name}", rel.parts[-2]))
    roots = {str(PurePosixPath(s.source.split("::", 1)[1].lstrip("./")).parent.parent) for s in samples}
    if len(roots) > 1:
        shown = ", ".join(sorted(r for r in roots if r != ".")[:5])
        raise EdgeloopError(f"{path} holds several image trees ({shown}); pick one with {path}::<folder>")
    samples.sort(key=lambda s: (s.class_name, s.source))
    return samples


def class_names(samples: Sequence[Sample]) -> tuple[str, ...]:
    return tuple(sorted({s.class_name for s in samples}))


def label_indices(samples: Sequence[Sample], classes: Sequence[str]) -> npt.NDArray[np.int64]:
    """Map each sample's folder name onto the model's class order."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({s.class_name for s in samples} - index.keys())
    if unknown:
        raise EdgeloopError(
            f"dataset has class folders the model does not know: {', '.join(unknown)} "
            f"(model classes: {', '.join(classes)})"
        )
    return np.fromiter((index[s.class_name] for s in samples), dtype=np.int64, count=len(samples))


def archive_members(samples: Sequence[Sample]) -> dict[str, bytes]:
    """The encoded bytes of every sample that lives in a .tar.gz, keyed by ``Sample.source``.

    A .tar.gz cannot seek backwards cheaply, so each archive is read in one sequential pass
    (keeping only the members asked for). Samples in plain folders are not read here.
    """
    archives: dict[str, set[str]] = {}
    for s in samples:
        if "::" in s.source:
            archive, member = s.source.split("::", 1)
            archives.setdefault(archive, set()).add(member)
    members: dict[str, bytes] = {}
    for archive, wanted in archives.items():
        with tarfile.open(archive) as tar:
            for info in tar:
                if info.name in wanted:
                    f = tar.extractfile(info)
                    if f is not None:
                        members[f"{archive}::{info.name}"] = f.read()
    return members


def read_sample(sample: Sample, members: dict[str, bytes]) -> bytes:
    """One sample's encoded bytes: from ``members`` (see ``archive_members``) or from its file."""
    if "::" in sample.source:
        try:
            return members[sample.source]
        except KeyError:
            raise EdgeloopError(f"{sample.source} is missing or not a regular file") from None
    try:
        return Path(sample.source).read_bytes()
    except OSError as e:
        raise EdgeloopError(f"cannot read {sample.source}: {e.strerror}") from e


def read_bytes(samples: Sequence[Sample]) -> Iterator[bytes]:
    """Yield each sample's encoded bytes in order."""
    members = archive_members(samples)
    for s in samples:
        yield read_sample(s, members)


def decode_all(
    samples: Sequence[Sample],
    size: int | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> npt.NDArray[np.uint8]:
    """Decode every sample to RGB uint8 NHWC (resized to ``size`` when given), in parallel.

    OpenCV releases the GIL while decoding, so threads give real parallelism here.
    """
    workers = workers or min(8, os.cpu_count() or 1)

    def work(data: bytes) -> npt.NDArray[np.uint8]:
        rgb = imaging.decode(data)
        return imaging.resize(rgb, size) if size else rgb

    out: list[npt.NDArray[np.uint8]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, img in enumerate(pool.map(work, read_bytes(samples)), 1):
            out.append(img)
            if progress is not None and i % 1000 == 0:
                progress(1000)
    if progress is not None and len(out) % 1000:
        progress(len(out) % 1000)
    if not out:
        return np.zeros((0, size or 0, size or 0, 3), dtype=np.uint8)
    shapes = {im.shape for im in out}
    if len(shapes) != 1:
        raise EdgeloopError(f"images have different sizes {sorted(shapes)[:3]}; pass a size to resize")
    return np.stack(out)


def load_labelled(
    spec: str | Path,
    classes: Sequence[str] | None = None,
    size: int | None = 32,
    limit: int | None = None,
    progress: ProgressFn | None = None,
) -> LabelledImages:
    """List, decode and label an ImageFolder set; ``classes`` fixes the label order (the model's)."""
    samples = list_samples(spec)
    if limit is not None:
        samples = balanced_subset(samples, limit)
    classes = tuple(classes) if classes is not None else class_names(samples)
    labels = label_indices(samples, classes)
    images = decode_all(samples, size=size, progress=progress)
    return LabelledImages(images=images, labels=labels, classes=classes)


def balanced_subset(samples: Sequence[Sample], limit: int) -> list[Sample]:
    """The first ``limit`` samples taken round-robin across classes, so small subsets stay balanced."""
    by_class: dict[str, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.class_name, []).append(s)
    out: list[Sample] = []
    queues = [iter(v) for _, v in sorted(by_class.items())]
    while len(out) < limit and queues:
        alive = []
        for q in queues:
            nxt = next(q, None)
            if nxt is not None and len(out) < limit:
                out.append(nxt)
                alive.append(q)
        queues = alive
    return out


# --- CIFAR-10 python batches -------------------------------------------------------------------


def import_cifar_python(archive: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Convert the official ``cifar-10-python.tar.gz`` into ``out/train|test/<class>/NNNNN.png``.

    The official distribution is a set of pickled dicts; only the known batch members are read, and
    only plain containers (dict/list/bytes/ndarray) are allowed to be unpickled.
    """
    cv2 = imaging.opencv()
    archive, out = Path(archive), Path(out_dir)
    if not archive.is_file():
        raise EdgeloopError(f"CIFAR archive not found: {archive}")
    counts: dict[str, int] = {"train": 0, "test": 0}
    with _open_tar(archive) as tar:
        members = {PurePosixPath(m.name).name: m for m in tar.getmembers() if m.isfile()}
        if "batches.meta" not in members:
            raise EdgeloopError(f"{archive} has no batches.meta: not a CIFAR-10 python archive")
        meta = _load_pickle(tar, members["batches.meta"])
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in _seq(meta[_key(meta, "label_names")])]
        batches = [(n, "train") for n in sorted(members) if n.startswith("data_batch_")]
        batches += [(n, "test") for n in sorted(members) if n == "test_batch"]
        if not batches:
            raise EdgeloopError(f"{archive} holds no data_batch_* or test_batch members")
        for name, split in batches:
            batch = _load_pickle(tar, members[name])
            data = np.asarray(batch[_key(batch, "data")], dtype=np.uint8)
            labels = [int(v) for v in _seq(batch[_key(batch, "labels")])]  # type: ignore[call-overload]
            if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(labels):
                raise EdgeloopError(f"{name}: expected N x 3072 pixels and N labels, got {data.shape}")
            images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for rgb, label in zip(images, labels, strict=True):
                class_dir = out / split / names[label]
                class_dir.mkdir(parents=True, exist_ok=True)
                path = class_dir / f"{counts[split]:05d}.png"
                if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                    raise EdgeloopError(f"cannot write {path}")
                counts[split] += 1
            log.info("imported %s: %d images", name, len(labels))
    return counts


def _seq(value: object) -> list[object]:
    if not isinstance(value, list | tuple | np.ndarray):
        raise EdgeloopError(f"CIFAR batch entry is a {type(value).__name__}, not a list")
    return list(value)


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive)
    except tarfile.TarError as e:
        raise EdgeloopError(f"{archive} is not a readable tar archive: {e}") from e


def _key(d: dict[object, object], name: str) -> object:
    # CIFAR pickles were written by Python 2: keys are bytes when loaded with encoding="bytes".
    for k in (name, name.encode()):
        if k in d:
            return k
    raise EdgeloopError(f"CIFAR batch lacks the {name!r} entry")


class _PlainUnpickler(pickle.Unpickler):
    """Only numpy arrays and builtins may be rebuilt: a CIFAR batch needs nothing else."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
        ("__builtin__", "object"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise EdgeloopError(f"CIFAR batch contains a disallowed object {module}.{name}")
        return super().find_class(module, name)


def _load_pickle(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[object, object]:
    f = tar.extractfile(member)
    if f is None:
        raise EdgeloopError(f"{member.name} is not a regular file")
    try:
        obj = _PlainUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise EdgeloopError(f"{member.name} is not a valid CIFAR batch: {e}") from e
    if not isinstance(obj, dict):
        raise EdgeloopError(f"{member.name}: expected a dict, got {type(obj).__name__}")
    return obj
