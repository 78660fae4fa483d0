"""Data loading: CIFAR file handling (download, checksums, safe extraction and unpickling),
class selection rules, and the synthetic dataset."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import logging
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cifar_fixtures import (
    CIFAR10_NAMES,
    MARK_VALUE,
    REAL_DATA,
    folder_md5s,
    make_archive,
    make_raw_archive,
    md5,
    tampered_batch,
    write_cifar10,
    write_cifar100,
    write_pickle,
)

from labsweep import cifar_files
from labsweep.cifar_files import (
    LAYOUTS,
    check_md5,
    ensure_dataset,
    file_md5,
    safe_unpickle,
)
from labsweep.datasets import (
    CIFAR10_MEAN,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DataError,
    ImageData,
    VariantRule,
    check_classes,
    load_cifar10,
    load_cifar100,
    resolve_classes,
    variant_classes,
)
from labsweep.paths import data_root
from labsweep.synthetic import make_synthetic

REAL_CIFAR10 = REAL_DATA / "cifar-10-batches-py"
REAL_CIFAR100_META = REAL_DATA / "cifar-100-python" / "meta"
needs_real_cifar10 = pytest.mark.skipif(not REAL_CIFAR10.is_dir(), reason=f"no {REAL_CIFAR10}")
needs_real_cifar100_meta = pytest.mark.skipif(not REAL_CIFAR100_META.is_file(),
                                              reason=f"no {REAL_CIFAR100_META}")


def use_md5s(monkeypatch: pytest.MonkeyPatch, name: str, *, folder: Path | None = None,
             archive: Path | None = None) -> None:
    """Make the 'official' checksums of dataset ``name`` those of our small test files."""
    layout = LAYOUTS[name]
    changes: dict[str, Any] = {}
    if folder is not None:
        changes["file_md5s"] = folder_md5s(folder)
    if archive is not None:
        changes["archive_md5"] = md5(archive)
    monkeypatch.setitem(LAYOUTS, name, dataclasses.replace(layout, **changes))


def marker(x: np.ndarray) -> dict[str, np.ndarray]:
    """Decode the markers that cifar_fixtures.make_batch writes into each image."""
    return {
        "class": x[:, 0, 0, 0].astype(int),
        "index": x[:, 0, 0, 1].astype(int) * 256 + x[:, 0, 1, 1],
        "mark": x[:, 1, 2, 2],
    }


# --------------------------------------------------------------------------- CIFAR-100


def test_load_cifar100_official_format(tmp_path: Path) -> None:
    write_cifar100(tmp_path, per_class_train=5, per_class_test=2)
    data = load_cifar100(tmp_path, [50, 7, 3], verify=False, download=False)

    assert data.name == "cifar100"
    assert data.class_ids == (3, 7, 50)
    assert data.class_names == ("fine_03", "fine_07", "fine_50")
    assert data.num_classes == 3
    assert (data.mean, data.std) == (CIFAR100_MEAN, CIFAR100_STD)
    for x, y, n in ((data.train_x, data.train_y, 15), (data.test_x, data.test_y, 6)):
        assert x.shape == (n, 32, 32, 3) and x.dtype == np.uint8 and x.flags.c_contiguous
        assert y.shape == (n,) and y.dtype == np.int64
        m = marker(x)
        # NHWC: channel last, rows before columns (B at row 1, col 2 — not at row 2, col 1)
        assert (m["mark"] == MARK_VALUE).all()
        assert (x[:, 2, 1, 2] != MARK_VALUE).all()
        # labels re-numbered in sorted class order; file order kept
        assert (np.array([3, 7, 50])[y] == m["class"]).all()
        assert (np.diff(m["index"]) > 0).all()
        assert np.bincount(y).tolist() == [n // 3] * 3


def test_cap_per_class_keeps_first_images_in_file_order(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, per_class_train=5, per_class_test=4)
    full = load_cifar100(tmp_path, [1, 2], verify=False, download=False)
    capped = load_cifar100(tmp_path, [1, 2], verify=False, download=False,
                           max_train_per_class=2, max_test_per_class=3)

    assert np.bincount(capped.train_y).tolist() == [2, 2]
    assert np.bincount(capped.test_y).tolist() == [3, 3]
    for full_x, full_y, x, y, cap in ((full.train_x, full.train_y, capped.train_x, capped.train_y, 2),
                                      (full.test_x, full.test_y, capped.test_x, capped.test_y, 3)):
        for k in range(2):
            expected = marker(full_x[full_y == k])["index"][:cap]
            assert marker(x[y == k])["index"].tolist() == expected.tolist()
    assert (folder / "train").is_file()


@pytest.mark.parametrize("cap", [0, -1, 2.5, True])
def test_bad_cap_is_refused_by_the_schema(cap: object) -> None:
    from omegaconf.errors import ValidationError

    from labsweep.schema import ConfigError, dataset_from_dict

    with pytest.raises((ConfigError, ValidationError), match="max_train_per_class"):  # a value, or a type
        dataset_from_dict({"name": "cifar100", "max_train_per_class": cap})


def test_class_without_images_is_a_data_error(tmp_path: Path) -> None:
    write_cifar100(tmp_path, classes=range(10))
    with pytest.raises(DataError, match=r"no images of classes \[42\]"):
        load_cifar100(tmp_path, [1, 42], verify=False, download=False)


@needs_real_cifar100_meta
def test_real_cifar100_meta_names(tmp_path: Path) -> None:
    assert check_md5(REAL_CIFAR100_META, LAYOUTS["cifar100"].file_md5s["meta"], verify=True)
    meta = safe_unpickle(REAL_CIFAR100_META)
    assert meta["fine_label_names"][0] == "apple" and len(meta["fine_label_names"]) == 100

    write_cifar100(tmp_path, per_class_train=1, per_class_test=1, meta_from=REAL_CIFAR100_META)
    data = load_cifar100(tmp_path, [0, 33, 56], verify=False, download=False)
    assert data.class_names[0] == "apple"
    assert data.class_names == tuple(meta["fine_label_names"][i] for i in (0, 33, 56))


# --------------------------------------------------------------------------- CIFAR-10


def test_load_cifar10_all_batches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_cifar10(tmp_path, per_class_train=3, per_class_test=2)
    with caplog.at_level(logging.WARNING):
        data = load_cifar10(tmp_path, verify=False, download=False)

    assert data.name == "cifar10" and data.class_ids == tuple(range(10))
    assert data.class_names == tuple(CIFAR10_NAMES)
    assert data.train_x.shape == (5 * 3 * 10, 32, 32, 3) and data.test_x.shape == (20, 32, 32, 3)
    assert (marker(data.train_x)["class"] == data.train_y).all()
    assert data.mean == CIFAR10_MEAN
    assert "lacks" not in caplog.text


def test_cifar10_subset_and_partial_batches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_cifar10(tmp_path, per_class_train=4, per_class_test=2, batches=[1, 3])
    with caplog.at_level(logging.WARNING):
        data = load_cifar10(tmp_path, [9, 2], verify=False, download=False, max_train_per_class=5)

    assert data.class_ids == (2, 9) and data.class_names == ("bird", "truck")
    # batch 1 then batch 3, capped at 5 per class: 4 from batch 1 and the first from batch 3
    assert np.bincount(data.train_y).tolist() == [5, 5]
    assert (np.array([2, 9])[data.train_y] == marker(data.train_x)["class"]).all()
    assert "data_batch_2, data_batch_4, data_batch_5" in caplog.text
    assert "data_batch_1, data_batch_3" in caplog.text


def test_cifar10_without_data_batch_1_is_a_data_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path, batches=[2, 3])
    with pytest.raises(DataError, match="data_batch_1"):
        load_cifar10(tmp_path, verify=False, download=False)


@needs_real_cifar10
def test_real_cifar10_slice_loads_with_verify_false(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        data = load_cifar10(REAL_DATA, [0, 1, 2], verify=False, download=False,
                            max_train_per_class=500, max_test_per_class=100)
    assert data.train_x.shape == (1500, 32, 32, 3) and data.test_x.shape == (300, 32, 32, 3)
    assert np.bincount(data.train_y).tolist() == [500] * 3
    assert np.bincount(data.test_y).tolist() == [100] * 3
    assert data.class_names == ("airplane", "automobile", "bird")
    assert "data_batch_1" in caplog.text and "dataset.verify=false" in caplog.text
    # real photos, not noise: neighbouring pixels are strongly correlated
    x = data.train_x.astype(np.float32)
    assert np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1] > 0.8


@needs_real_cifar10
def test_real_cifar10_slice_fails_verification() -> None:
    with pytest.raises(DataError, match=r"data_batch_1 has md5 .* official file has md5 "
                                        r"c99cafc152244af753f735de768cd75f.*dataset\.verify=false"):
        load_cifar10(REAL_DATA, [0, 1, 2], verify=True, download=False)
    meta = REAL_CIFAR10 / "batches.meta"
    assert check_md5(meta, LAYOUTS["cifar10"].file_md5s["batches.meta"], verify=True)


# --------------------------------------------------------------------------- hostile / broken files


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
def test_tampered_pickle_is_refused_without_running_it(tmp_path: Path, kind: str) -> None:
    # The payload is live: plain pickle runs it (creating a throwaway marker).
    live = tmp_path / "live-marker"
    pickle.loads(pickle.dumps(tampered_batch(kind, live), protocol=2))
    assert live.exists()

    folder = write_cifar10(tmp_path / "data", batches=[1])
    marker_file = tmp_path / "marker"
    write_pickle(folder / "data_batch_1", tampered_batch(kind, marker_file))
    with pytest.raises(DataError, match=r"refusing to load global '.*' from .*data_batch_1"):
        load_cifar10(tmp_path / "data", verify=False, download=False)
    assert not marker_file.exists()


def test_object_array_is_refused(tmp_path: Path) -> None:
    path = write_pickle(tmp_path / "test_batch", {"data": np.array([1, "x"], dtype=object)})
    with pytest.raises(DataError, match="object array"):
        safe_unpickle(path)


def test_truncated_pickle(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, batches=[1])
    path = folder / "test_batch"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"test_batch .*truncated or corrupt.*Delete"):
        load_cifar10(tmp_path, verify=False, download=False)


def test_missing_pickle(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, batches=[1])
    (folder / "batches.meta").unlink()
    with pytest.raises(DataError, match="missing .*batches.meta"):
        load_cifar10(tmp_path, verify=False, download=False)


def _batch(**changes: object) -> dict[str, object]:
    batch: dict[str, object] = {"batch_label": "b", "labels": [0, 1],
                                "data": np.zeros((2, 3072), np.uint8), "filenames": ["a", "b"]}
    batch.update(changes)
    return {k: v for k, v in batch.items() if v is not None}


@pytest.mark.parametrize("contents, problem", [
    (_batch(data=np.zeros((2, 3072), np.float32)), "uint8"),
    (_batch(data=np.zeros((2, 3, 32, 32), np.uint8)), "uint8"),
    (_batch(data=np.zeros((2, 1024), np.uint8)), "uint8"),
    (_batch(data=[[0] * 3072] * 2), "uint8"),
    (_batch(labels=[0, 1, 2]), "3 integers|2 integers"),
    (_batch(labels=[0, 10]), "outside 0..9"),
    (_batch(labels=[0.0, 1.0]), "integers"),
    (_batch(labels=None), "'labels' is missing"),
    ([1, 2, 3], "holds a list"),
])
def test_bad_batch_contents(tmp_path: Path, contents: object, problem: str) -> None:
    folder = write_cifar10(tmp_path, batches=[1])
    write_pickle(folder / "data_batch_1", contents)
    with pytest.raises(DataError, match=problem) as info:
        load_cifar10(tmp_path, verify=False, download=False)
    assert "data_batch_1" in str(info.value) and "Delete" in str(info.value)


# --------------------------------------------------------------------------- checksums


def test_checksum_mismatch_is_an_error_or_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_cifar10(tmp_path, batches=[1])
    use_md5s(monkeypatch, "cifar10", folder=folder)
    load_cifar10(tmp_path, verify=True, download=False)  # all match

    good = md5(folder / "test_batch")
    write_pickle(folder / "test_batch", pickle.loads((folder / "data_batch_1").read_bytes()))
    bad = md5(folder / "test_batch")
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path, verify=True, download=False)
    message = str(info.value)
    assert str(folder / "test_batch") in message and good in message and bad in message
    assert "dataset.verify=false" in message

    with caplog.at_level(logging.WARNING):
        data = load_cifar10(tmp_path, verify=False, download=False)
    assert data.test_x.shape[0] > 0
    assert "test_batch" in caplog.text and bad in caplog.text


def test_md5_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    assert file_md5(path) == md5(path)
    assert (tmp_path / cifar_files.MD5_CACHE_NAME).is_file()

    def no_hashing(p: Path) -> str:
        raise AssertionError("hashed again although the file did not change")

    monkeypatch.setattr(cifar_files, "_hash_file", no_hashing)
    assert file_md5(path) == md5(path)
    monkeypatch.undo()

    path.write_bytes(b"abcd")  # new size: the cached entry no longer applies
    assert file_md5(path) == md5(path)


def test_a_read_only_data_folder_is_hashed_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A course's shared copy of the data is read-only: no sidecar cache, but a multirun's jobs (one process)
    hash each file only once, and a file rewritten in between is hashed again."""
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    tmp_path.chmod(0o555)
    try:
        assert file_md5(path) == md5(path)
        assert not (tmp_path / cifar_files.MD5_CACHE_NAME).exists()
        hashed: list[Path] = []
        monkeypatch.setattr(cifar_files, "_hash_file", lambda p: hashed.append(p) or md5(p))
        assert file_md5(path) == md5(path)
        assert hashed == []
        tmp_path.chmod(0o755)
        path.write_bytes(b"abcd")
        tmp_path.chmod(0o555)
        assert file_md5(path) == md5(path)
        assert hashed == [path]
    finally:
        tmp_path.chmod(0o755)


# --------------------------------------------------------------------------- download and extraction


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local HTTP server on 127.0.0.1 serving the returned folder at the returned URL."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _served_cifar10(tmp_path: Path, served: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = write_cifar10(tmp_path / "source", per_class_train=2, per_class_test=1)
    archive = make_archive(folder, served / "cifar-10-python.tar.gz")
    use_md5s(monkeypatch, "cifar10", folder=folder, archive=archive)
    return archive


def test_download_end_to_end(tmp_path: Path, http_root: tuple[Path, str],
                             monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    served, base = http_root
    archive = _served_cifar10(tmp_path, served, monkeypatch)
    root = tmp_path / "root"

    data = load_cifar10(root, [0, 1], verify=True, download=True, url=f"{base}/{archive.name}")
    assert data.train_x.shape == (2 * 5 * 2, 32, 32, 3)
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert md5(root / archive.name) == md5(archive)  # the archive is kept
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err  # the progress bar
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]

    # A kept archive is extracted again without the network.
    for p in (root / "cifar-10-batches-py").iterdir():
        p.unlink()
    (root / "cifar-10-batches-py").rmdir()
    again = load_cifar10(root, [0, 1], verify=True, download=False, url=f"{base}/missing.tar.gz")
    assert (again.train_x == data.train_x).all()


def test_download_with_wrong_md5_is_deleted(tmp_path: Path, http_root: tuple[Path, str],
                                            monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    served, base = http_root
    archive = _served_cifar10(tmp_path, served, monkeypatch)
    monkeypatch.setitem(LAYOUTS, "cifar10",
                        dataclasses.replace(LAYOUTS["cifar10"], archive_md5="0" * 32))
    root = tmp_path / "root"
    url = f"{base}/{archive.name}"

    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz .* has md5 .*deleted"):
        ensure_dataset(root, "cifar10", download=True, verify=True, url=url)
    assert not (root / archive.name).exists() and not (root / "cifar-10-batches-py").exists()
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]

    with caplog.at_level(logging.WARNING):
        folder = ensure_dataset(root, "cifar10", download=True, verify=False, url=url)
    assert (folder / "test_batch").is_file() and (root / archive.name).is_file()
    assert "dataset.verify=false" in caplog.text


def test_download_failure_names_the_url(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    _, base = http_root
    url = f"{base}/nope.tar.gz"
    with pytest.raises(DataError, match=rf"cannot download {url}.*by hand"):
        ensure_dataset(tmp_path / "root", "cifar10", download=True, verify=True, url=url)
    assert not (tmp_path / "root" / "cifar-10-python.tar.gz").exists()


def test_corrupt_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_cifar10(tmp_path / "source", batches=[1])
    archive = make_archive(folder, tmp_path / "root" / "cifar-10-python.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cannot extract .*cifar-10-python\.tar\.gz.*Delete"):
        ensure_dataset(tmp_path / "root", "cifar10", download=False, verify=False, url="unused")
    assert not (tmp_path / "root" / "cifar-10-batches-py").exists()


def test_existing_archive_with_wrong_md5(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path / "source", batches=[1])
    make_archive(folder, tmp_path / "root" / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz has md5 .*verify=false"):
        ensure_dataset(tmp_path / "root", "cifar10", download=False, verify=True, url="unused")


@pytest.mark.parametrize("evil, link", [
    ("../evil", None),
    ("cifar-10-batches-py/../../evil", None),
    ("cifar-10-batches-py/evil", "../../../evil"),  # a symlink pointing outside
])
def test_archive_member_escaping_the_target_is_refused(tmp_path: Path, evil: str,
                                                       link: str | None) -> None:
    root = tmp_path / "deep" / "root"
    root.mkdir(parents=True)
    make_raw_archive(root / "cifar-10-python.tar.gz",
                     {"cifar-10-batches-py/batches.meta": b"x"} | ({} if link else {evil: b"evil"}),
                     links={evil: link} if link else {})
    with pytest.raises(DataError, match="refusing to extract member") as info:
        ensure_dataset(root, "cifar10", download=False, verify=False, url="unused")
    assert evil in str(info.value)
    assert not list(tmp_path.rglob("evil"))
    assert not (root / "cifar-10-batches-py").exists()
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_archive_without_the_dataset_folder(tmp_path: Path) -> None:
    make_raw_archive(tmp_path / "cifar-100-python.tar.gz", {"something/else": b"x"})
    with pytest.raises(DataError, match="does not contain the folder cifar-100-python"):
        ensure_dataset(tmp_path, "cifar100", download=False, verify=False, url="unused")


def test_missing_data_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_cifar100(tmp_path / "nowhere", [0, 1, 2], download=False)
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert "dataset.root=" in message and "LABSWEEP_DATA" in message
    assert not (tmp_path / "nowhere").exists()


def test_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABSWEEP_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("LABSWEEP_DATA")
    assert data_root() == Path(__file__).resolve().parents[1] / "data"


# --------------------------------------------------------------------------- class selection


def test_variant_rule_of_the_notebook() -> None:
    assert variant_classes(4, 3, "iu5") == (19, 24, 59)
    assert variant_classes(4, 3, "guimc") == (19, 59, 80)
    assert variant_classes(4, 3, "foreign") == (19, 59, 90)


def test_variant_rule_of_report_000() -> None:
    rule = VariantRule(group_offset=11, variant_offset=37, streams={"iu5": ("fixed", 0)})
    assert variant_classes(22, 19, "iu5", rule) == (0, 33, 56)


def test_variant_rule_errors() -> None:
    with pytest.raises(DataError, match="dataset.stream='evening' is unknown.*iu5, guimc, foreign"):
        variant_classes(1, 1, "evening")
    with pytest.raises(DataError, match=r"dataset\.variant=50 gives class 106 = 50 \+ 56, outside 0\.\.99"):
        variant_classes(1, 50, "guimc")
    with pytest.raises(DataError, match=r"dataset\.group=90 gives class 105 = 90 \+ 15"):
        variant_classes(90, 1, "iu5")
    with pytest.raises(DataError, match=r"dataset\.variant=85 with dataset\.stream=iu5 gives "
                                        r"class 106 = 85 \+ 21"):
        variant_classes(1, 85, "iu5", VariantRule(variant_offset=0))
    with pytest.raises(DataError, match=r"give classes \[80, 80, 80\].*dataset\.classes"):
        variant_classes(65, 24, "guimc")
    with pytest.raises(DataError, match="dataset.group must be an integer"):
        variant_classes("3", 1, "iu5")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="stream 'x'"):
        VariantRule(streams={"x": ("random", 1)})
    with pytest.raises(DataError, match="stream 'x'"):
        VariantRule(streams={"x": ("fixed",)})  # type: ignore[dict-item]


@pytest.mark.parametrize("classes, problem", [
    ([], "empty"),
    ([1, 2.0], "integer class ids"),
    ([True, 2], "integer class ids"),
    ([1, 100], r"\[100\] are outside 0\.\.99"),
    ([-1, 3], r"\[-1\] are outside"),
    ([4, 5, 4], r"lists \[4\] more than once"),
    ("0,1,2", "must be a list"),
    (3, "must be a list"),
])
def test_check_classes_errors(classes: object, problem: str) -> None:
    with pytest.raises(DataError, match=rf"dataset\.classes.*{problem}"):
        check_classes(classes, 100)  # type: ignore[arg-type]


def test_check_classes_sorts() -> None:
    assert check_classes([56, 0, np.int64(33)], 100) == (0, 33, 56)  # type: ignore[list-item]
    with pytest.raises(DataError, match="my.key"):
        check_classes([10], 10, key="my.key")


def test_resolve_classes_precedence() -> None:
    assert resolve_classes([58, 0, 55], 22, 19, "iu5", VariantRule()) == (0, 55, 58)
    assert resolve_classes(None, 4, 3, "iu5", VariantRule()) == (19, 24, 59)
    with pytest.raises(DataError, match=r"dataset\.classes=\[a,b,c\] or dataset\.group=G dataset\.variant=V"):
        resolve_classes(None, None, None, "iu5", VariantRule())
    with pytest.raises(DataError, match="dataset.variant is not set"):
        resolve_classes(None, 4, None, "iu5", VariantRule())


# --------------------------------------------------------------------------- synthetic data


def test_synthetic_is_deterministic_and_well_formed() -> None:
    np.random.seed(1)
    a = make_synthetic(seed=3)
    np.random.seed(2)  # the global RNG must not matter
    b = make_synthetic(seed=3)
    c = make_synthetic(seed=4)

    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.train_x, c.train_x)
    assert a.train_x.shape == (900, 32, 32, 3) and a.test_x.shape == (300, 32, 32, 3)
    assert a.train_x.dtype == np.uint8 and a.train_y.dtype == np.int64 and a.train_x.flags.c_contiguous
    assert np.bincount(a.train_y).tolist() == [300] * 3
    assert a.class_ids == (0, 1, 2) and a.class_names == ("synthetic-0", "synthetic-1", "synthetic-2")
    pixels = a.train_x.reshape(-1, 3) / 255
    np.testing.assert_allclose(a.mean, pixels.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(a.std, pixels.std(axis=0), atol=1e-9)

    ids = make_synthetic(num_classes=2, train_per_class=4, test_per_class=2, class_ids=[33, 0])
    assert ids.class_ids == (0, 33) and ids.class_names == ("synthetic-0", "synthetic-33")
    with pytest.raises(DataError, match="dataset.classes has 2 ids but dataset.num_classes=3"):
        make_synthetic(num_classes=3, class_ids=[1, 2])


def test_synthetic_classes_are_learnable_but_not_trivial() -> None:
    data = make_synthetic()
    x_train = data.train_x.reshape(len(data.train_x), -1).astype(np.float32)
    x_test = data.test_x.reshape(len(data.test_x), -1).astype(np.float32)
    centroids = np.stack([x_train[data.train_y == k].mean(axis=0) for k in range(3)])
    distances = ((x_test[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = (distances.argmin(axis=1) == data.test_y).mean()
    assert 0.6 < accuracy < 0.99  # chance is 1/3


def test_image_data_checks_shapes() -> None:
    x = np.zeros((2, 32, 32, 3), np.uint8)
    y = np.zeros(2, np.int64)
    data = ImageData("t", x, y, x, y, (0,), ("a",), (0.5,) * 3, (0.2,) * 3)  # type: ignore[arg-type]
    assert data.num_classes == 1
    with pytest.raises(ValueError, match="labels must lie in 0..0"):
        ImageData("t", x, y + 1, x, y, (0,), ("a",), (0.5,) * 3, (0.2,) * 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train split"):
        ImageData("t", x.astype(np.float32), y, x, y, (0,), ("a",), (0.5,) * 3, (0.2,) * 3)  # type: ignore[arg-type]
