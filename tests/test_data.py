import gzip
import struct

import numpy as np
import pytest

from modelpress.data import DataConfig, apply_preprocessing, calibration_indices, load_dataset
from modelpress.errors import ConfigError, DataError


def test_digits_splits_are_stratified_deterministic_and_disjoint(digits_image):
    again = load_dataset("digits", view="image")
    np.testing.assert_array_equal(digits_image.test.x, again.test.x)
    d = digits_image
    assert (len(d.train), len(d.val), len(d.test)) == (1293, 144, 360)
    # every class is in every split, close to its overall share
    for split in (d.train, d.val, d.test):
        counts = np.bincount(split.y, minlength=10)
        assert counts.min() > 0.8 * counts.mean()
    # no sample appears in two splits
    rows = lambda s: {r.tobytes() for r in s.x.reshape(len(s), -1)}  # noqa: E731
    assert not (rows(d.train) & rows(d.test))
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.test.y, d.test.y)


def test_normalisation_uses_train_statistics_only(digits_image):
    d = digits_image
    assert abs(d.train.x.mean()) < 1e-4 and abs(d.train.x.std() - 1) < 1e-3
    assert abs(d.test.x.mean()) > 1e-4  # test is normalised with train's numbers, not its own
    from modelpress.data.digits import load_digits_raw

    raw, _, _ = load_digits_raw()
    expected = (raw[:3] - d.preprocessing["mean"][0]) / d.preprocessing["std"][0]
    np.testing.assert_allclose(apply_preprocessing(raw[:3], d.preprocessing), expected, rtol=1e-5)


def test_views_and_resize():
    seq = load_dataset("digits", view="sequence")
    assert seq.input_spec.kind == "sequence" and seq.train.x.shape[1:] == (8, 8)
    big = load_dataset("digits", resize=32)
    assert big.input_spec.shape == (1, 32, 32) and big.test.x.dtype == np.float32
    seq32 = load_dataset("digits", view="sequence", resize=16)
    assert seq32.input_spec.shape == (16, 16)


def test_calibration_subset_is_seeded_stratified_and_from_train(digits_image):
    a = digits_image.calibration(100, seed=3)
    b = digits_image.calibration(100, seed=3)
    c = digits_image.calibration(100, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.shape == (100, 1, 8, 8)
    idx = calibration_indices(digits_image.train.y, 100, seed=3)
    counts = np.bincount(digits_image.train.y[idx], minlength=10)
    assert counts.min() >= 9 and counts.sum() == 100
    with pytest.raises(ConfigError):
        digits_image.calibration(0)


def test_unknown_dataset_and_option_errors():
    with pytest.raises(ConfigError, match="known: .*digits"):
        load_dataset("imagenet")
    with pytest.raises(ConfigError, match="view"):
        load_dataset("digits", view="tokens")
    with pytest.raises(ConfigError, match="root"):
        DataConfig(name="mnist")
    with pytest.raises(ConfigError, match="unknown dataset option"):
        load_dataset("digits", colour=True)


# --- IDX (MNIST / Fashion-MNIST) on files the test writes ------------------------------------


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist(folder, n_train=40, n_test=20, gz=True, size=6):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, arr in files.items():
        data = _idx_bytes(np.asarray(arr))
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return files


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_loader(tmp_path, gz):
    files = _write_mnist(tmp_path, gz=gz)
    d = load_dataset("mnist", root=str(tmp_path))
    assert len(d.test) == 20 and len(d.train) + len(d.val) == 40
    assert d.input_spec.shape == (1, 6, 6)
    raw_test = files["t10k-images-idx3-ubyte"].astype(np.float32)[:, None] / 255.0
    np.testing.assert_allclose(d.test.x, apply_preprocessing(raw_test, d.preprocessing), rtol=1e-5)
    f = load_dataset("fashion-mnist", root=str(tmp_path), view="sequence")
    assert f.labels[0] == "T-shirt/top" and f.input_spec.shape == (6, 6)


def test_idx_bad_magic_truncated_and_count_mismatch(tmp_path):
    _write_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(DataError, match="bad magic"):
        load_dataset("mnist", root=str(tmp_path))
    path.write_bytes(good[:-5])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", root=str(tmp_path))
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(good)
    labels.write_bytes(_idx_bytes(np.arange(19) % 10))
    with pytest.raises(DataError, match="20 images but 19 labels"):
        load_dataset("mnist", root=str(tmp_path))
    labels.unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", root=str(tmp_path))


def test_missing_data_folder_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_dataset("mnist", root=str(tmp_path / "nowhere"))


# --- CIFAR-10 binary batches ------------------------------------------------------------------


def _write_cifar(folder, per_batch=12, n_test=10):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)] + [
        ("test_batch.bin", n_test)
    ]:
        labels = (np.arange(n) % 10).astype(np.uint8)[:, None]
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")


def test_cifar10_binary_loader(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-bin")
    d = load_dataset("cifar10", root=str(tmp_path))
    assert d.input_spec.shape == (3, 32, 32) and len(d.test) == 10
    assert len(d.train) + len(d.val) == 60 and d.labels[3] == "class3"
    raw = np.fromfile(tmp_path / "cifar-10-batches-bin" / "test_batch.bin", np.uint8).reshape(
        10, -1
    )
    first = raw[0, 1:].reshape(3, 32, 32).astype(np.float32) / 255.0
    np.testing.assert_allclose(
        d.test.x[0], apply_preprocessing(first[None], d.preprocessing)[0], rtol=1e-5
    )


def test_cifar10_truncated_and_missing(tmp_path):
    _write_cifar(tmp_path)
    test = tmp_path / "test_batch.bin"
    test.write_bytes(test.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("cifar10", root=str(tmp_path))
    test.unlink()
    with pytest.raises(DataError, match="test_batch.bin"):
        load_dataset("cifar10", root=str(tmp_path))


# --- text --------------------------------------------------------------------------------------


def _reviews(n=60):
    good = ["a great film", "wonderful acting and a great plot", "loved it, great fun"]
    bad = ["a dull film", "terrible acting and a boring plot", "hated it, boring"]
    rows = []
    for i in range(n):
        label, pool = ("pos", good) if i % 2 else ("neg", bad)
        rows.append((label, pool[i % 3]))
    return rows


def test_text_csv_tsv_and_vocab_from_train_only(tmp_path):
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("label,text\n" + "\n".join(f'{lab},"{t}"' for lab, t in _reviews()))
    d = load_dataset("text", root=str(csv_path), max_len=6)
    assert d.labels == ["neg", "pos"] and d.input_spec.kind == "tokens"
    assert d.train.x.shape[1] == 6 and d.train.x.dtype == np.int64
    words = d.preprocessing["vocab"]["words"]
    assert words[:2] == ["<pad>", "<unk>"] and "great" in words
    tsv = tmp_path / "reviews.tsv"
    tsv.write_text("\n".join(f"{lab}\t{t}" for lab, t in _reviews()))  # no header
    assert load_dataset("text", root=str(tsv)).num_classes == 2


def test_text_aclimdb_folder(tmp_path):
    for split in ("train", "test"):
        for i, (label, text) in enumerate(_reviews(20)):
            folder = tmp_path / split / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}_1.txt").write_text(text + "<br /><br />")
    (tmp_path / "train" / "unsup").mkdir()
    (tmp_path / "train" / "unsup" / "0_0.txt").write_text("ignored")
    d = load_dataset("text", root=str(tmp_path))
    assert d.labels == ["neg", "pos"] and len(d.test) == 20
    assert "br" not in d.preprocessing["vocab"]["words"]


def test_text_bad_rows(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,text\npos,good\nneg\n")
    with pytest.raises(DataError, match="row 2"):
        load_dataset("text", root=str(bad))
