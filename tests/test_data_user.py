"""Your own data and preprocessing: npz arrays, image folders, CSV columns, mean / std / channels.

Every file is written by the test (tiny arrays, tiny images). The last test is the acceptance
check of issue 10: a model trained outside modelpress on its own mean/std keeps its accuracy
when its data is loaded back through ``load_dataset``.
"""

from __future__ import annotations

import math
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from modelpress.data import DataConfig, apply_preprocessing, load_dataset
from modelpress.data.text import load_text_raw
from modelpress.errors import ConfigError, DataError

FAST = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _pixels(n: int, *shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


# --- npz ---------------------------------------------------------------------------------------


def test_npz_nhwc_string_labels_and_user_mean_std(tmp_path):
    x = _pixels(40, 6, 5, 3)  # (N, H, W, C)
    y = np.array(["dog", "cat"] * 20)
    root = _npz(tmp_path / "d.npz", x=x, y=y)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    d = load_dataset(DataConfig(name="npz", root=root, mean=mean, std=std))
    assert d.labels == ["cat", "dog"] and d.input_spec.shape == (3, 6, 5)
    pre = d.preprocessing
    assert (pre["mean"], pre["std"], pre["normalisation"]) == (mean, std, "user")
    raw = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    expected = (raw - np.float32(mean).reshape(1, 3, 1, 1)) / np.float32(std).reshape(1, 3, 1, 1)
    rows = {r.tobytes(): i for i, r in enumerate(expected)}
    for split in (d.train, d.val, d.test):  # every sample is one of the inputs, exactly
        for sample, label in zip(split.x, split.y):
            i = rows[sample.tobytes()]
            assert d.labels[label] == y[i]
    assert len(d.train) + len(d.val) + len(d.test) == 40
    # the dict a deployed model carries reproduces the inputs from raw pixels
    np.testing.assert_allclose(apply_preprocessing(raw, pre)[:3], expected[:3], rtol=1e-6)
    assert pre["data_config"]["mean"] == mean  # JSON-like: lists, not tuples


def test_npz_nchw_float_official_test_split_and_class_names(tmp_path):
    rng = np.random.default_rng(1)
    x, tx = rng.random((30, 1, 4, 4), dtype=np.float32), rng.random((8, 1, 4, 4), dtype=np.float32)
    y, ty = np.arange(30) % 3, np.arange(8) % 3
    root = _npz(
        tmp_path / "d.npz", x=x, y=y, x_test=tx, y_test=ty, labels=np.array(["a", "b", "c"])
    )
    d = load_dataset("npz", root=root)
    assert d.labels == ["a", "b", "c"] and d.preprocessing["normalisation"] == "train"
    np.testing.assert_array_equal(d.test.y, ty)  # the official split, in its order
    np.testing.assert_allclose(d.test.x, apply_preprocessing(tx, d.preprocessing), rtol=1e-6)
    assert abs(d.train.x.mean()) < 1e-4  # train statistics when no mean/std is given


def test_npz_sequences_channels_and_resize(tmp_path):
    seq = np.random.default_rng(2).random((24, 7, 5)).astype(np.float32) * 40 - 20  # (N, T, F)
    root = _npz(tmp_path / "s.npz", x=seq, y=np.arange(24) % 2)
    s = load_dataset("npz", root=root, view="sequence", mean=-1.0, std=10.0)
    assert s.input_spec.kind == "sequence" and s.input_spec.shape == (7, 5)
    assert s.preprocessing["input_range"][0] < -1  # floats are used as they are, range recorded
    want = ((seq + 1.0) / 10.0).reshape(len(seq), -1)  # (x - mean) / std, no /255 for floats
    for row in s.test.x.reshape(len(s.test), -1):
        assert np.abs(want - row).max(axis=1).min() < 1e-5
    rgb = _npz(tmp_path / "rgb.npz", x=_pixels(20, 3, 6, 6), y=np.arange(20) % 2)  # NCHW
    grey = load_dataset("npz", root=rgb, channels=1, resize=4)
    assert grey.input_spec.shape == (1, 4, 4) and grey.preprocessing["channels"] == 1
    raw = _pixels(20, 3, 6, 6).astype(np.float32) / 255.0
    luma = (raw * np.float32([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)).sum(1, keepdims=True)
    from modelpress.data.images import resize_images

    pre = grey.preprocessing
    want = (resize_images(luma, 4) - pre["mean"][0]) / pre["std"][0]
    got = apply_preprocessing(raw, pre)  # a deployed model converts RGB input the same way
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert load_dataset("npz", root=rgb, channels=3).input_spec.shape == (3, 6, 6)
    grey_in = _npz(tmp_path / "g.npz", x=_pixels(20, 6, 6), y=np.arange(20) % 2)
    assert load_dataset("npz", root=grey_in, channels=3).input_spec.shape == (3, 6, 6)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": _pixels(10, 4, 4)}, r"missing array 'y' \(found: x\)"),
        ({"x": _pixels(10, 4, 4), "y": np.arange(9) % 2}, "x has 10 samples but y has 9 labels"),
        ({"x": np.zeros((0, 4, 4), np.uint8), "y": np.zeros(0, np.int64)}, "x is empty"),
        ({"x": np.array([["a", "b"]] * 4), "y": np.arange(4) % 2}, "expected numbers"),
        ({"x": _pixels(10, 4, 4), "y": np.zeros(10, np.int64)}, "at least 2"),
        ({"x": _pixels(10, 4, 4), "y": np.arange(10) % 2, "x_test": _pixels(2, 4, 4)}, "y_test"),
        ({"x": _pixels(10, 3, 4, 3), "y": np.arange(10) % 2}, "layout='NHWC'"),
        ({"x": _pixels(10, 3, 3, 3), "y": np.arange(10) % 2}, "both axis 1 and axis 3"),
        ({"x": _pixels(10, 5, 5, 5), "y": np.arange(10) % 2}, "no axis of 1, 3 or 4 channels"),
        ({"x": _pixels(10, 4), "y": np.arange(10) % 2}, r"x\[:, None, :\]"),
        ({"X": _pixels(10, 4, 4), "x": _pixels(10, 4, 4), "y": np.arange(10)}, "unexpected"),
        (
            {
                "x": _pixels(6, 4, 4),
                "y": np.array([0, 1, 0, 1, 0, 5]),
                "labels": np.array(["a", "b"]),
            },
            "names only 2",
        ),
        (
            {
                "x": _pixels(4, 4, 4),
                "y": np.array(["a", "b", "a", "c"]),
                "labels": np.array(["a", "b"]),
            },
            "'c'",
        ),
    ],
)
def test_npz_bad_input(tmp_path, arrays, match):
    root = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match) as info:
        load_dataset("npz", root=root)
    assert "\n" not in str(info.value) and "bad.npz" in str(info.value)


def test_npz_refuses_pickle_and_not_npz_files(tmp_path):
    names = np.array(["a", None], dtype=object)
    root = _npz(tmp_path / "obj.npz", x=_pixels(4, 4, 4), y=np.arange(4) % 2, labels=names)
    with pytest.raises(DataError, match="'labels' is an object array .*pickle"):
        load_dataset("npz", root=root)
    np.save(tmp_path / "one.npy", _pixels(4, 4, 4))
    with pytest.raises(DataError, match="not an .npz"):
        load_dataset("npz", root=str(tmp_path / "one.npy"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", root=str(tmp_path / "junk.npz"))
    # the layout key settles an ambiguous shape
    x = _pixels(10, 3, 4, 3)
    ok = _npz(tmp_path / "l.npz", x=x, y=np.arange(10) % 2, layout="NCHW")
    assert load_dataset("npz", root=ok).input_spec.shape == (3, 4, 3)


# --- mean / std / channels validation --------------------------------------------------------


def test_mean_std_errors(tmp_path):
    with pytest.raises(ConfigError, match="std .* <= 0"):
        DataConfig(mean=0.5, std=0.0)
    with pytest.raises(ConfigError, match="mean and std go together: add std"):
        DataConfig(mean=0.5)
    with pytest.raises(ConfigError, match="mean has 2 values but std has 3"):
        DataConfig(mean=[0.1, 0.2], std=[0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="channels is 1"):
        DataConfig(mean=[0.1, 0.2, 0.3], std=0.2, channels=1)
    with pytest.raises(ConfigError, match="channels must be 1"):
        DataConfig(channels=2)
    with pytest.raises(ConfigError, match="image data sets"):
        DataConfig(name="text", root="r.csv", mean=0.5, std=0.2)
    with pytest.raises(ConfigError, match="text data set only"):
        DataConfig(text_column="body")
    # the channel count is known once the data is read: 2 values for 3 channels fails there
    root = _npz(tmp_path / "rgb.npz", x=_pixels(20, 4, 4, 3), y=np.arange(20) % 2)
    with pytest.raises(ConfigError, match="mean has 2 values but the images have 3 channel"):
        load_dataset("npz", root=root, mean=[0.5, 0.5], std=[0.2, 0.2])
    with pytest.raises(ConfigError, match="std has 2 values"):
        load_dataset("digits", mean=0.5, std=[0.2, 0.2])


_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-3, 3),
    st.just("0.5"),
    st.just(True),
)


@FAST
@given(
    mean=st.one_of(_numbers, st.lists(_numbers, min_size=0, max_size=4)),
    std=st.one_of(_numbers, st.lists(_numbers, min_size=0, max_size=4)),
)
def test_mean_std_validation_property(mean, std):
    def values(v):
        return list(v) if isinstance(v, list | tuple) else [v]

    def valid_number(v):
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    lengths = {len(values(mean)), len(values(std))} - {1}
    ok = (
        bool(values(mean))
        and bool(values(std))
        and all(valid_number(v) for v in values(mean) + values(std))
        and all(v > 0 for v in values(std))
        and len(lengths) <= 1
    )
    if ok:
        cfg = DataConfig(mean=mean, std=std)
        assert list(values(cfg.mean)) == [float(v) for v in values(mean)]
        assert list(values(cfg.std)) == [float(v) for v in values(std)]
        assert all(isinstance(v, float) for v in values(cfg.std))
    else:
        with pytest.raises(ConfigError):
            DataConfig(mean=mean, std=std)


# --- image folders -----------------------------------------------------------------------------


def _image(path: Path, pixels: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # (H, W) uint8 -> "L", (H, W, 3) -> "RGB"
    return pixels


def _grey_classes(root: Path, n: int = 6, size: int = 5) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for k, name in enumerate(("circle", "square")):
        out[name] = [
            _image(root / name / f"{i}.png", _pixels(1, size, size, seed=10 * k + i)[0])
            for i in range(n)
        ]
    return out


def test_image_folder_grey_classes(tmp_path):
    images = _grey_classes(tmp_path)
    (tmp_path / "circle" / "notes.txt").write_text("not an image")  # other files are ignored
    d = load_dataset("image-folder", root=str(tmp_path), mean=0.5, std=0.5)
    assert d.labels == ["circle", "square"] and d.input_spec.shape == (1, 5, 5)
    assert len(d.train) + len(d.val) + len(d.test) == 12
    want = {
        ((im.astype(np.float32) / 255.0 - 0.5) / 0.5).tobytes() for v in images.values() for im in v
    }
    got = {s[0].tobytes() for split in (d.train, d.val, d.test) for s in split.x}
    assert got == want


def test_image_folder_colour_sizes_split_layout_and_formats(tmp_path):
    rng = np.random.default_rng(3)
    for split, n in (("train", 6), ("test", 2)):
        for name in ("a", "b"):
            for i in range(n):
                size = 6 if i % 2 else 8
                _image(
                    tmp_path / split / name / f"{i}.png",
                    rng.integers(0, 256, (size, size), dtype=np.uint8),
                )
    colour = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    _image(tmp_path / "train" / "a" / "c.jpg", colour)
    Image.fromarray(colour).save(tmp_path / "train" / "b" / "c.bmp")
    with pytest.raises(DataError, match="differ in size .*resize: <side>"):
        load_dataset("image-folder", root=str(tmp_path))
    d = load_dataset("image-folder", root=str(tmp_path), resize=4)
    assert d.input_spec.shape == (3, 4, 4) and d.preprocessing["channels"] == 3  # one is colour
    assert len(d.test) == 4 and len(d.train) + len(d.val) == 14
    grey = load_dataset("image-folder", root=str(tmp_path), resize=4, channels=1)
    assert grey.input_spec.shape == (1, 4, 4)
    # a grey PNG read for an RGB model: its three channels are equal
    first = d.test.x[0] * np.float32(d.preprocessing["std"]).reshape(3, 1, 1)
    first = first + np.float32(d.preprocessing["mean"]).reshape(3, 1, 1)
    np.testing.assert_allclose(first[0], first[1], atol=1e-5)


def test_image_folder_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty is empty"):
        load_dataset("image-folder", root=str(empty))
    flat = tmp_path / "flat"
    _image(flat / "a.png", _pixels(1, 4, 4)[0])
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset("image-folder", root=str(flat))
    root = tmp_path / "data"
    _grey_classes(root, n=4)
    (root / "nothing").mkdir()
    (root / "nothing" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="class folder .*nothing holds no images"):
        load_dataset("image-folder", root=str(root))
    (root / "nothing" / "readme.md").unlink()
    (root / "nothing").rmdir()
    (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="cannot read image .*broken.png") as info:
        load_dataset("image-folder", root=str(root))
    assert "\n" not in str(info.value)
    one = tmp_path / "one"
    _image(one / "only" / "a.png", _pixels(1, 4, 4)[0])
    with pytest.raises(DataError, match="at least 2"):
        load_dataset("image-folder", root=str(one))


# --- CSV / TSV columns -------------------------------------------------------------------------

SENTENCES = [f"review number {i} says the film was {w}" for i, w in enumerate(["good", "bad"] * 10)]


def _csv(path: Path, header: str, rows: list[tuple[str, str]]) -> str:
    path.write_text(header + "\n" + "\n".join(f'"{a}",{b}' for a, b in rows) + "\n")
    return str(path)


def test_reviews_sentiment_header_fails_then_loads_with_columns(tmp_path):
    rows = [(s, "pos" if s.endswith("good") else "neg") for s in SENTENCES]
    root = _csv(tmp_path / "r.csv", "reviews,sentiment", rows)
    with pytest.raises(
        DataError, match="'reviews', 'sentiment'.*text_column: and label_column:"
    ) as e:
        load_dataset("text", root=root)
    assert "\n" not in str(e.value)
    d = load_dataset("text", root=root, text_column="reviews", label_column="sentiment")
    assert d.labels == ["neg", "pos"] and len(d.train) + len(d.val) + len(d.test) == 20
    labels, texts = load_text_raw(root, label_column="Sentiment")[:2]  # the other is the text
    assert labels[0] == "pos" and texts[0] == SENTENCES[0]
    with pytest.raises(
        DataError, match=r"text_column 'body' is not a column .*'reviews', 'sentiment'"
    ):
        load_dataset("text", root=root, text_column="body")
    with pytest.raises(DataError, match="label column 'reviews' has 20 distinct values in 20 rows"):
        load_dataset("text", root=root, label_column="reviews", text_column="sentiment")


def test_unnamed_header_with_label_first_fails(tmp_path):
    rows = [("pos" if s.endswith("good") else "neg", s) for s in SENTENCES]
    path = tmp_path / "s.tsv"
    path.write_text("sentiment\treview\n" + "\n".join(f"{a}\t{b}" for a, b in rows))
    with pytest.raises(DataError, match="looks like a header"):
        load_dataset("text", root=str(path))
    d = load_dataset("text", root=str(path), label_column="sentiment", text_column="review")
    assert d.labels == ["neg", "pos"]
    with pytest.raises(DataError, match="no columns"):
        folder = tmp_path / "imdb" / "train" / "pos"
        folder.mkdir(parents=True)
        (folder / "0.txt").write_text("good")
        load_dataset("text", root=str(tmp_path / "imdb"), text_column="review")


_word = st.text(alphabet="abcdefghij", min_size=1, max_size=8)


@FAST
@given(
    names=st.lists(_word, min_size=2, max_size=2, unique=True).filter(
        lambda n: not ({"label", "text"} & set(n))
    ),
    classes=st.lists(_word, min_size=2, max_size=4, unique=True),
    n=st.integers(8, 30),
    text_first=st.booleans(),
)
def test_header_detection_property(names, classes, n, text_first):
    """Sentences under a header that names no label/text column never load as classes; with the
    columns named they load exactly. (A header cell that is also a class name reads as data.)"""
    assume(not set(names) & set(classes))
    texts = [f"sentence {i} about {names[0]}" for i in range(n)]
    labels = [classes[i % len(classes)] for i in range(n)]
    cols = (texts, labels) if text_first else (labels, texts)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        path.write_text(
            ",".join(names) + "\n" + "\n".join(f"{a},{b}" for a, b in zip(*cols)) + "\n"
        )
        with pytest.raises(DataError, match="text_column: and label_column:") as info:
            load_text_raw(path)
        assert all(repr(name) in str(info.value) for name in names)
        text_name, label_name = names if text_first else names[::-1]
        got = load_text_raw(path, text_column=text_name, label_column=label_name)
        assert got[0] == labels and got[1] == texts


# --- recipes -----------------------------------------------------------------------------------


def test_recipe_with_user_data_keys_validates(tmp_path):
    from modelpress.run.recipe import RecipeError
    from modelpress.run.recipe_checks import load_recipe

    root = _npz(tmp_path / "d.npz", x=_pixels(20, 4, 4, 3), y=np.arange(20) % 2)
    body = """\
    name: t
    data: {name: npz, root: ROOT, mean: [0.5, 0.4, 0.3], std: 0.25, channels: 3, calibration: 8}
    models:
      cnn: {model: resnet8}
    """
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(body).replace("ROOT", root))
    recipe, _ = load_recipe(path)
    assert recipe.data["mean"] == [0.5, 0.4, 0.3]
    path.write_text(textwrap.dedent(body).replace("ROOT", root).replace("std: 0.25", "std: 0"))
    with pytest.raises(RecipeError, match="std"):
        load_recipe(path)
    path.write_text(textwrap.dedent(body).replace("ROOT", root).replace("channels", "colours"))
    with pytest.raises(RecipeError, match="unknown key 'colours'.*mean, std, channels"):
        load_recipe(path)


# --- acceptance: a model brought with its own mean/std keeps its accuracy ----------------------


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) uint8 images of 3 classes: a bright band in rows, columns or the diagonal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(90, 40, (n, 8, 8))
    for i, c in enumerate(y):
        band = [np.s_[i, 2:4, :], np.s_[i, :, 5:7], np.s_[i, np.arange(8), np.arange(8)]][c]
        x[band] += 80
    return np.clip(x, 0, 255).astype(np.uint8), y


def test_user_model_keeps_its_accuracy_with_its_own_mean_std(tmp_path):
    from modelpress.train import evaluate

    mean, std = 0.3, 0.2
    x, y = _blobs(600, seed=0)
    tx, ty = _blobs(1000, seed=1)

    def normalise(a: np.ndarray) -> np.ndarray:  # the user's own pipeline: /255, then Normalize
        scaled = a.astype(np.float32)[:, None] / 255.0
        return (scaled - np.float32(mean)) / np.float32(std)

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(normalise(x)), torch.from_numpy(y)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    torch.save(model.state_dict(), tmp_path / "user.pt")
    with torch.no_grad():
        own = (model(torch.from_numpy(normalise(tx))).argmax(1).numpy() == ty).mean()
    assert own > 0.6  # the model learned something, so the comparison means something

    root = _npz(tmp_path / "data.npz", x=x, y=y, x_test=tx, y_test=ty)  # raw pixels
    data = load_dataset(DataConfig(name="npz", root=root, mean=mean, std=std))
    imported = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )
    imported.load_state_dict(torch.load(tmp_path / "user.pt", weights_only=True))
    acc = evaluate(imported, data.test)["accuracy"]
    assert abs(acc - own) * 100 <= 0.1, (acc, own)
    np.testing.assert_allclose(data.test.x, normalise(tx), rtol=1e-6, atol=1e-6)
    assert data.preprocessing["mean"] == [mean] and data.preprocessing["std"] == [std]
    # without its mean/std the inputs differ: the check above is not vacuous
    other = load_dataset(DataConfig(name="npz", root=root))
    assert not np.allclose(other.test.x, normalise(tx), atol=1e-2)
