from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from shared import datasets
from shared.errors import EdgeloopError


def test_golden_set_is_20_per_class(golden_dir: Path) -> None:
    samples = datasets.list_samples(golden_dir)
    assert len(samples) == 200
    assert datasets.class_names(samples) == datasets.CIFAR10_CLASSES
    data = datasets.load_labelled(golden_dir)
    assert data.images.shape == (200, 32, 32, 3)
    assert np.bincount(data.labels).tolist() == [20] * 10


def test_labels_follow_the_models_class_order(golden_dir: Path) -> None:
    reordered = tuple(reversed(datasets.CIFAR10_CLASSES))
    data = datasets.load_labelled(golden_dir, classes=reordered, limit=10)
    samples = datasets.list_samples(golden_dir)
    first = next(s for s in samples if s.class_name == "airplane")
    assert reordered.index("airplane") == 9
    assert first.class_name == "airplane"
    assert set(data.labels.tolist()) == set(range(10))
    with pytest.raises(EdgeloopError, match="does not know"):
        datasets.load_labelled(golden_dir, classes=("airplane", "cat"))


def test_tar_gz_of_an_image_folder(tmp_path: Path, golden_dir: Path) -> None:
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(golden_dir / "cat", arcname="data/test/cat")
        tar.add(golden_dir / "dog", arcname="data/test/dog")
        tar.add(golden_dir / "dog", arcname="data/train/dog")
    with pytest.raises(EdgeloopError, match="pick one"):
        datasets.list_samples(archive)
    from_tar = datasets.load_labelled(f"{archive}::data/test")
    from_dir = datasets.load_labelled(golden_dir)
    mask = np.isin(from_dir.labels, [from_dir.classes.index("cat"), from_dir.classes.index("dog")])
    assert from_tar.classes == ("cat", "dog")
    np.testing.assert_array_equal(from_tar.images, from_dir.images[mask])


def test_limit_is_class_balanced(golden_dir: Path) -> None:
    data = datasets.load_labelled(golden_dir, limit=30)
    assert np.bincount(data.labels).tolist() == [3] * 10


def test_missing_and_empty_datasets(tmp_path: Path) -> None:
    with pytest.raises(EdgeloopError, match="not found"):
        datasets.list_samples(tmp_path / "nope")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(EdgeloopError, match="no images"):
        datasets.list_samples(tmp_path / "empty")


def _cifar_batch(n: int, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"labels": [i % 3 for i in range(n)],
        b"batch_label": b"test",
    }


def _add(tar: tarfile.TarFile, name: str, obj: object) -> None:
    data = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_import_cifar_python_batches(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    batches = {"data_batch_1": _cifar_batch(4, 0), "data_batch_2": _cifar_batch(2, 1), "test_batch": _cifar_batch(3, 2)}
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "batches.meta", {b"label_names": [b"apple", b"bee", b"cup"]})
        for name, batch in batches.items():
            _add(tar, name, batch)
    counts = datasets.import_cifar_python(archive, tmp_path / "out")
    assert counts == {"train": 6, "test": 3}
    test = datasets.load_labelled(tmp_path / "out" / "test")
    assert test.classes == ("apple", "bee", "cup")
    first = np.asarray(batches["test_batch"][b"data"])[0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(test.images[0], first)  # PNG is lossless: pixels survive exactly


@pytest.mark.security
def test_import_cifar_refuses_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("echo pwned",))

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "batches.meta", Evil())
    with pytest.raises(EdgeloopError, match="disallowed"):
        datasets.import_cifar_python(archive, tmp_path / "out")


def test_import_cifar_rejects_non_cifar(tmp_path: Path) -> None:
    archive = tmp_path / "x.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "readme", b"hi")
    with pytest.raises(EdgeloopError, match=r"batches\.meta"):
        datasets.import_cifar_python(archive, tmp_path / "out")
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(EdgeloopError):
        datasets.import_cifar_python(tmp_path / "plain.txt", tmp_path / "out")
