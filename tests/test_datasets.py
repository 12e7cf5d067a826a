"""Dataset specs, sample selection, dataset sizes, and loading all or only the requested samples."""

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from nsp_pipeline.data.loading import load_dataset, load_samples
from nsp_pipeline.data.specs import DatasetError, dataset_size, select_samples


@pytest.fixture
def images(tmp_path):
    """A folder of three 4×5 grayscale PNGs, a text file, and a labels CSV with a header (b.png's
    label unknown)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(["b.png", "a.png", "c.png"]):
        Image.fromarray(np.full((4, 5), 50 * i, dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,label\na.png,3\nc.png,7\nb.png,-1\n")
    return folder, labels


# digits


def test_digits_split_is_fixed_and_partitions_the_set():
    test = load_dataset({"source": "digits"})
    train = load_dataset({"source": "digits", "split": "train"})
    everything = load_dataset({"source": "digits", "split": "all"})
    assert (len(test), len(train), len(everything)) == (360, 1437, 1797)
    order = np.random.default_rng(0).permutation(1797)
    assert np.array_equal(test.ids, np.sort(order[-360:]))
    assert np.array_equal(np.sort(np.concatenate([train.ids, test.ids])), np.arange(1797))
    digits = load_digits()
    assert test.inputs.shape == (360, 1, 8, 8) and test.inputs.dtype == torch.float32
    assert np.allclose(test.inputs[:, 0].numpy(), digits.images[test.ids] / 16)
    assert np.array_equal(test.labels, digits.target[test.ids]) and test.labels.dtype == np.int64
    assert test.name == "digits-test"
    assert [dataset_size({"source": "digits", "split": s}) for s in ("test", "train", "all")] == [
        360,
        1437,
        1797,
    ]


def test_digits_resize_and_input_shape():
    big = load_dataset({"source": "digits", "size": 28})
    assert big.inputs.shape == (360, 1, 28, 28)
    assert 0 <= big.inputs.min() and big.inputs.max() <= 1
    fitted = load_dataset({"source": "digits"}, input_shape=(1, 28, 28))
    assert torch.equal(fitted.inputs, big.inputs)
    with pytest.raises(DatasetError, match=r"'digits-test'.*\(1, 8, 8\).*\(3, 8, 8\)"):
        load_dataset({"source": "digits"}, input_shape=(3, 8, 8))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": "mnist"}, "'source' is 'mnist'; expected one of"),
        ({"split": "test"}, "'source' is None"),
        ({"source": "digits", "split": "valid"}, "'split' is 'valid'"),
        ({"source": "digits", "size": 0}, "'size' is 0"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


# arrays


def test_npy_gets_a_channel_axis_and_labels(tmp_path):
    inputs = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.save(tmp_path / "x.npy", inputs)
    np.save(tmp_path / "y.npy", np.array([4.0, 1.0]))
    data = load_dataset(
        {"source": "array", "path": str(tmp_path / "x.npy"), "labels": str(tmp_path / "y.npy")}
    )
    assert data.inputs.shape == (2, 1, 3, 4) and data.inputs.dtype == torch.float32
    assert np.array_equal(data.inputs[:, 0].numpy(), inputs)
    assert data.labels.tolist() == [4, 1] and data.ids.tolist() == [0, 1] and data.name == "x"
    assert dataset_size({"source": "array", "path": str(tmp_path / "x.npy")}) == 2


def test_npy_without_labels_and_flat_samples(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((5, 7)))
    data = load_dataset({"source": "array", "path": str(tmp_path / "x.npy"), "name": "flat"})
    assert data.inputs.shape == (5, 7) and data.labels.tolist() == [-1] * 5 and data.name == "flat"


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_default_and_custom_keys(tmp_path, compressed):
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "d.npz", inputs=np.zeros((3, 1, 2, 2)), labels=np.array([0, 1, 2]), x=np.ones((4, 2, 2)))
    data = load_dataset({"source": "array", "path": str(tmp_path / "d.npz")})
    assert data.inputs.shape == (3, 1, 2, 2) and data.labels.tolist() == [0, 1, 2]
    spec = {"source": "array", "path": str(tmp_path / "d.npz"), "inputs_key": "x"}
    with pytest.raises(DatasetError, match=r"labels have shape \(3,\); expected \(4,\)"):
        load_dataset(spec)
    assert dataset_size(spec) == 4 and dataset_size({"source": "array", "path": str(tmp_path / "d.npz")}) == 3


def test_npz_missing_keys(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)))
    with pytest.raises(DatasetError, match=r"d.npz has no array 'inputs'; it holds \['x'\]"):
        load_dataset({"source": "array", "path": str(tmp_path / "d.npz")})
    with pytest.raises(DatasetError, match="has no array 'inputs'"):
        dataset_size({"source": "array", "path": str(tmp_path / "d.npz")})
    with pytest.raises(DatasetError, match="has no array 'y'"):
        load_dataset(
            {"source": "array", "path": str(tmp_path / "d.npz"), "inputs_key": "x", "labels_key": "y"}
        )
    unlabelled = load_dataset({"source": "array", "path": str(tmp_path / "d.npz"), "inputs_key": "x"})
    assert unlabelled.labels.tolist() == [-1, -1, -1]


def test_h5_keys_and_size(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as file:
        file["images"] = np.random.default_rng(0).random((4, 6, 6))
        file["targets"] = np.arange(4)
    spec = {"source": "array", "path": str(path), "inputs_key": "images", "labels_key": "targets"}
    data = load_dataset(spec, input_shape=(1, 3, 3))
    assert data.inputs.shape == (4, 1, 3, 3) and data.labels.tolist() == [0, 1, 2, 3]
    assert dataset_size(spec) == 4
    with pytest.raises(DatasetError, match=r"d.h5 has no dataset 'inputs'; it holds \['images', 'targets'\]"):
        load_dataset({"source": "array", "path": str(path)})


def test_array_errors(tmp_path):
    def spec(name, **extra):
        return {"source": "array", "path": str(tmp_path / name), **extra}

    with pytest.raises(DatasetError, match=r"'path' .*missing.npy does not exist"):
        load_dataset(spec("missing.npy"))
    with pytest.raises(DatasetError, match="does not exist"):
        dataset_size(spec("missing.npy"))
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DatasetError, match=r"x.csv: unknown file type '.csv'"):
        load_dataset(spec("x.csv"))
    for name in ("bad.npy", "bad.npz", "bad.h5"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 this is not what it claims to be")
        with pytest.raises(DatasetError, match=rf"{name} cannot be read"):
            load_dataset(spec(name))
        with pytest.raises(DatasetError, match=rf"{name} cannot be read"):
            dataset_size(spec(name))
    np.save(tmp_path / "vector.npy", np.zeros(5))
    with pytest.raises(
        DatasetError, match=r"vector.npy: inputs have shape \(5,\); expected \(N, \*sample_shape\)"
    ):
        load_dataset(spec("vector.npy"))
    np.save(tmp_path / "nan.npy", np.array([[[0.0, np.nan]], [[0.0, 1.0]], [[np.inf, 0.0]]]))
    with pytest.raises(DatasetError, match=r"dataset 'nan' \(.*nan.npy\): 2 samples contain NaN or Inf"):
        load_dataset(spec("nan.npy"))
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    np.save(tmp_path / "y.npy", np.zeros(2, dtype=int))
    with pytest.raises(DatasetError, match=r"x.npy: labels have shape \(2,\); expected \(3,\)"):
        load_dataset(spec("x.npy", labels=str(tmp_path / "y.npy")))
    np.save(tmp_path / "y.npy", np.array([0.5, 1, 2]))
    with pytest.raises(DatasetError, match="expected integer labels"):
        load_dataset(spec("x.npy", labels=str(tmp_path / "y.npy")))
    with pytest.raises(
        DatasetError, match=r"'x' \(.*x.npy\) has samples of shape \(2,\); the model expects \(1, 2, 2\)"
    ):
        load_dataset(spec("x.npy"), input_shape=(1, 2, 2))


# image folders


def test_image_folder_in_name_order_with_csv_labels(images):
    folder, labels = images
    data = load_dataset({"source": "images", "path": str(folder), "labels": str(labels)})
    assert data.inputs.shape == (3, 1, 4, 5)
    assert data.inputs[:, 0, 0, 0].tolist() == pytest.approx([50 / 255, 0, 100 / 255])  # a, b, c
    assert data.labels.tolist() == [3, -1, 7] and data.ids.tolist() == [0, 1, 2] and data.name == "images"
    assert dataset_size({"source": "images", "path": str(folder)}) == 3
    rgb = load_dataset({"source": "images", "path": str(folder), "grayscale": False}, input_shape=(3, 8, 10))
    assert rgb.inputs.shape == (3, 3, 8, 10) and rgb.labels.tolist() == [-1, -1, -1]


def test_sixteen_bit_png_is_scaled(tmp_path):
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(tmp_path / "deep.png")
    data = load_dataset({"source": "images", "path": str(tmp_path)})
    assert data.inputs.flatten().tolist() == [0.0, 1.0]


def test_image_folder_errors(images, tmp_path):
    folder, labels = images
    spec = {"source": "images", "path": str(folder)}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty holds no image files"):
        load_dataset({"source": "images", "path": str(tmp_path / "empty")})
    with pytest.raises(DatasetError, match="holds no image files"):
        dataset_size({"source": "images", "path": str(tmp_path / "empty")})
    with pytest.raises(DatasetError, match="'grayscale' is 'yes'"):
        load_dataset({**spec, "grayscale": "yes"})
    labels.write_text("a.png,3\nz.png,1\n")
    with pytest.raises(DatasetError, match=r"labels.csv line 2: 'z.png' is not one of the 3 images of"):
        load_dataset({**spec, "labels": str(labels)})
    labels.write_text("a.png,three\n")
    with pytest.raises(DatasetError, match=r"labels.csv line 1.*integer label"):
        load_dataset({**spec, "labels": str(labels)})
    labels.write_text("a.png,1\na.png,2\n")
    with pytest.raises(DatasetError, match=r"line 2: image 'a.png' is labelled again \(first on line 1\)"):
        load_dataset({**spec, "labels": str(labels)})
    Image.fromarray(np.zeros((6, 6), dtype=np.uint8)).save(folder / "d.png")
    with pytest.raises(DatasetError, match=r"d.png has shape \(1, 6, 6\) but a.png has \(1, 4, 5\)"):
        load_dataset(spec)
    assert load_dataset(spec, input_shape=(1, 6, 6)).inputs.shape == (4, 1, 6, 6)
    (folder / "e.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=r"image .*e.png cannot be read"):
        load_dataset(spec, input_shape=(1, 6, 6))


# selection


def test_select_samples():
    assert select_samples(10, {"count": 3}).tolist() == [0, 1, 2]
    assert select_samples(10, {"indices": [7, 2]}).tolist() == [7, 2]
    assert select_samples(10, {"range": [4, 6]}).tolist() == [4, 5]
    assert select_samples(3, {"all": True}).tolist() == [0, 1, 2]
    assert select_samples(3, {"all": True}).dtype == np.int64
    data = load_dataset({"source": "digits"})
    part = load_samples({"source": "digits"}, select_samples(len(data), {"indices": [5, 0]}))
    assert part.ids.tolist() == [data.ids[5], data.ids[0]] and torch.equal(part.inputs[1], data.inputs[0])


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({}, "samples is {}; expected exactly one key of"),
        ({"count": 1, "all": True}, "expected exactly one key of"),
        ({"first": 3}, "expected exactly one key of"),
        ({"count": 0}, r"samples.count is 0; expected an integer from 1 to 10 \(the dataset has 10"),
        ({"count": True}, "samples.count is True"),
        ({"count": 11}, "samples.count is 11; expected an integer from 1 to 10"),
        ({"indices": []}, "samples.indices is \\[\\]; expected a non-empty list"),
        ({"indices": [1, 10, -1]}, r"samples.indices\[1\] is 10 \(and 1 more\); expected integers from 0"),
        ({"indices": [1, 2, 1]}, r"samples.indices\[2\] repeats samples.indices\[0\] \(1\)"),
        ({"range": [5, 5]}, r"samples.range is \[5, 5\]; expected 0 <= start < stop <= 10"),
        ({"range": [0, 11]}, r"samples.range\[1\] is 11; expected integers from 0 to 10"),
        ({"range": [0]}, "expected \\[start, stop\\] integers"),
        ({"all": False}, "samples.all is False; expected true"),
    ],
)
def test_select_samples_errors(selection, message):
    with pytest.raises(DatasetError, match=message):
        select_samples(10, selection)


# loading only the requested samples

N = 23


def spec_of(kind, folder):
    """A dataset of ``N`` samples of one source kind in ``folder``, the model's input shape, and the
    raw inputs and labels as saved (``None`` where the source computes them)."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, N)
    if kind.startswith("npy"):
        raw = rng.normal(size=(N, 6, 5))
        np.save(folder / "x.npy", raw)
        np.save(folder / "y.npy", labels)
        spec = {"source": "array", "path": str(folder / "x.npy"), "labels": str(folder / "y.npy")}
        return spec, (1, 9, 7) if kind == "npy-resized" else None, raw[:, None], labels
    if kind.startswith("npz"):
        raw = rng.integers(0, 256, (N, 1, 6, 5)).astype(np.uint8)
        save = np.savez_compressed if kind == "npz-compressed" else np.savez
        save(folder / "d.npz", inputs=raw, labels=labels, other=np.zeros(3))
        return {"source": "array", "path": str(folder / "d.npz")}, None, raw, labels
    if kind == "h5":
        raw = rng.random((N, 2, 4, 4)).astype(np.float32)
        with h5py.File(folder / "d.h5", "w") as file:
            file["images"] = raw
            file["targets"] = labels
        keys = {"inputs_key": "images", "labels_key": "targets"}
        return {"source": "array", "path": str(folder / "d.h5"), **keys}, None, raw, labels
    if kind.startswith("images"):
        images = folder / "images"
        images.mkdir()
        raw = rng.integers(0, 256, (N, 4, 5, 3)).astype(np.uint8)
        for i in range(N):
            Image.fromarray(raw[i]).save(images / f"{i:03d}.png")
        rows = [f"{i:03d}.png,{labels[i]}" for i in rng.permutation(N)]
        (folder / "labels.csv").write_text("\n".join(["filename,label", *rows]) + "\n")
        spec = {"source": "images", "path": str(images), "labels": str(folder / "labels.csv")}
        if kind == "images-rgb":
            return {**spec, "grayscale": False}, None, raw.transpose(0, 3, 1, 2) / 255.0, labels
        return spec, (1, 7, 9), None, labels
    split = {"digits": "test", "digits-resized": "train"}[kind]
    spec = {"source": "digits", "split": split, **({"size": 12} if kind == "digits-resized" else {})}
    return spec, None, None, None


KINDS = "npy npy-resized npz npz-compressed h5 images images-rgb digits digits-resized".split()


@pytest.mark.parametrize("kind", KINDS)
def test_load_samples_equals_the_rows_of_load_dataset(tmp_path, kind):
    spec, input_shape, raw, labels = spec_of(kind, tmp_path)
    everything = load_dataset(spec, input_shape)
    n = len(everything)
    rng = np.random.default_rng(len(kind))
    for positions in (rng.choice(n, size=9, replace=False), [n - 1, 0], [4]):
        part = load_samples(spec, positions, input_shape)
        assert torch.equal(part.inputs, everything.inputs[torch.as_tensor(positions)])
        assert np.array_equal(part.labels, everything.labels[positions]) and part.labels.dtype == np.int64
        assert np.array_equal(part.ids, everything.ids[positions]) and part.ids.dtype == np.int64
        assert part.name == everything.name and part.inputs.is_contiguous()
        if raw is not None and input_shape is None:  # the file's own values, as float32
            assert np.array_equal(part.inputs.numpy(), raw[positions].astype(np.float32))
        if labels is not None:
            assert np.array_equal(part.labels, labels[positions])
    if kind == "digits":
        digits = load_digits()
        assert np.array_equal(part.inputs[:, 0].numpy(), (digits.images[part.ids] / 16).astype(np.float32))


@pytest.mark.parametrize("kind", ["npy", "h5"])
def test_load_samples_repeated_positions(tmp_path, kind):
    spec, _, raw, labels = spec_of(kind, tmp_path)
    part = load_samples(spec, [5, 2, 5, 0, 2])
    assert np.array_equal(part.inputs.numpy(), raw[[5, 2, 5, 0, 2]].astype(np.float32))
    assert part.ids.tolist() == [5, 2, 5, 0, 2] and np.array_equal(part.labels, labels[[5, 2, 5, 0, 2]])


def test_load_samples_checks_and_opens_only_the_requested_samples(tmp_path, images):
    inputs = np.zeros((4, 1, 2, 2))
    inputs[2, 0, 1, 1] = np.nan
    np.save(tmp_path / "x.npy", inputs)
    spec = {"source": "array", "path": str(tmp_path / "x.npy")}
    assert load_samples(spec, [3, 1, 0]).ids.tolist() == [3, 1, 0]
    with pytest.raises(
        DatasetError, match=r"dataset 'x' \(.*x.npy\): 1 samples contain NaN or Inf \(positions \[2\]\)"
    ):
        load_samples(spec, [3, 2])
    folder, _ = images  # a.png, b.png, c.png
    (folder / "d.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=r"d.png cannot be read"):
        load_dataset({"source": "images", "path": str(folder)})
    part = load_samples({"source": "images", "path": str(folder)}, [2, 0])
    assert part.inputs[:, 0, 0, 0].tolist() == pytest.approx([100 / 255, 50 / 255])
    assert part.ids.tolist() == [2, 0]


@pytest.mark.parametrize(
    ("positions", "error", "message"),
    [
        ([1, 4, -1], IndexError, r"sample positions \[4, -1\] outside dataset 'x' \(.*x.npy\) of 4 samples"),
        ([], DatasetError, r"dataset 'x' .*sample positions \[\]; expected a non-empty sequence of integers"),
        ([0.0, 1.0], DatasetError, "expected a non-empty sequence of integers"),
        ([[0, 1]], DatasetError, "expected a non-empty sequence of integers"),
    ],
)
def test_load_samples_errors(tmp_path, positions, error, message):
    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    with pytest.raises(error, match=message):
        load_samples({"source": "array", "path": str(tmp_path / "x.npy")}, positions)


def test_specs_import_neither_torch_nor_pil():
    """The Snakefile plans its jobs with the specs module at every parse, inside every cluster job."""
    code = "import sys, nsp_pipeline.data.specs; print(sorted({'torch', 'PIL'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
