"""Data faults a user meets: every image mode, transparency, labels CSVs (missing rows, spreadsheet
exports), array dtypes and byte orders, pickled objects, sample selections and HDF5 files held by a
writer. Each is read correctly (against the values the test put in the file) or refused with a
message naming the file, line, key or sample and what was expected."""

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from nsp_pipeline.data.loading import image_values, load_dataset, load_samples
from nsp_pipeline.data.specs import DatasetError, dataset_size, select_samples

GLYPH = np.array([[0, 255, 0], [128, 255, 64]], dtype=np.uint8)  # the alpha channel: 1 opaque


def folder_of(tmp_path, **images: Image.Image):
    """A folder holding ``images`` as files named by the keywords (``a_png`` -> ``a.png``)."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for name, image in images.items():
        image.save(folder / name.replace("_", "."))
    return folder


def images(folder, **spec):
    return {"source": "images", "path": str(folder), **spec}


def pixels(data, sample=0) -> np.ndarray:
    return data.inputs[sample].numpy()


# image modes


def test_glyph_in_the_alpha_channel_is_refused_or_read_as_asked(tmp_path):
    """The issue's case: black colours everywhere, the glyph only in alpha (was all zeros)."""
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 3] = GLYPH
    folder = folder_of(tmp_path, glyph_png=Image.fromarray(rgba, "RGBA"))
    with pytest.raises(
        DatasetError,
        match=r"image .*glyph.png \(mode RGBA\) is transparent at 4 of 6 pixels.*'alpha' set to black",
    ):
        load_dataset(images(folder))
    glyph = GLYPH[None] / np.float32(255)
    assert np.array_equal(pixels(load_dataset(images(folder, alpha="channel"))), glyph)
    colour = load_dataset(images(folder, alpha="channel", grayscale=False))
    assert np.array_equal(pixels(colour), np.repeat(glyph, 3, axis=0))


@pytest.mark.parametrize(("background", "value"), [("black", 0.0), ("white", 1.0)])
def test_transparent_images_are_composited_over_the_background_asked_for(tmp_path, background, value):
    gray = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    rgba = np.stack([gray, gray, gray, GLYPH], axis=-1)  # gray colours: luma is the gray value
    la = np.stack([gray, GLYPH], axis=-1)
    folder = folder_of(tmp_path, a_png=Image.fromarray(rgba, "RGBA"), b_png=Image.fromarray(la, "LA"))
    alpha = GLYPH / 255.0
    expected = gray / 255.0 * alpha + value * (1 - alpha)
    data = load_dataset(images(folder, alpha=background))
    for sample in (0, 1):
        assert np.allclose(pixels(data, sample), expected[None], atol=1e-6)
    colour = load_dataset(images(folder, alpha=background, grayscale=False))
    assert np.allclose(pixels(colour), np.repeat(expected[None], 3, axis=0), atol=1e-6)


def test_opaque_alpha_is_ignored_and_alpha_channel_needs_one(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [90, 90, 90]]], dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 255, dtype=np.uint8)], axis=-1)
    folder = folder_of(tmp_path, a_png=Image.fromarray(rgba, "RGBA"), b_png=Image.fromarray(rgb, "RGB"))
    data = load_dataset(images(folder, grayscale=False))
    assert np.array_equal(pixels(data, 0), rgb.transpose(2, 0, 1) / np.float32(255))
    assert np.array_equal(pixels(data, 0), pixels(data, 1))
    luma = load_dataset(images(folder)).inputs[:, 0].numpy()  # ITU-R 601-2, as Pillow rounds it
    expected = ((rgb.astype(np.int64) @ [19595, 38470, 7471] + 0x8000) >> 16).astype(np.uint8)
    assert np.array_equal(luma[0], expected / np.float32(255)) and np.array_equal(luma[0], luma[1])
    with pytest.raises(DatasetError, match=r"b.png \(mode RGB\) has no alpha channel; 'alpha: channel'"):
        load_dataset(images(folder, alpha="channel"))


def test_palette_images_are_read_through_their_colours(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([30, 30, 30, 200, 200, 200, 0, 0, 0])
    palette.putdata([1, 0, 2])
    folder = folder_of(tmp_path, a_gif=palette)
    assert np.allclose(pixels(load_dataset(images(folder))), [[[200 / 255, 30 / 255, 0]]])
    palette.save(folder / "a.gif", transparency=2)  # colour 2 transparent, as GIFs mark it
    with pytest.raises(DatasetError, match=r"a.gif \(mode P\) is transparent at 1 of 3 pixels"):
        load_dataset(images(folder))
    assert np.allclose(pixels(load_dataset(images(folder, alpha="white"))), [[[200 / 255, 30 / 255, 1]]])


def test_sixteen_bit_images_keep_their_whole_range(tmp_path):
    """Pillow's own conversion to 8 bits clips 16-bit values at 255 (1000 would read as 1.0)."""
    deep = np.array([[0, 1000, 65535]], dtype=np.uint16)
    folder = folder_of(tmp_path, a_png=Image.fromarray(deep))
    assert np.array_equal(pixels(load_dataset(images(folder))), deep[None] / np.float32(65535))
    colour = pixels(load_dataset(images(folder, grayscale=False)))
    assert np.array_equal(colour, np.repeat(deep[None], 3, axis=0) / np.float32(65535))


def test_bilevel_images(tmp_path):
    bits = np.array([[True, False, True]])
    folder = folder_of(tmp_path, a_png=Image.fromarray(bits))
    assert Image.open(folder / "a.png").mode == "1"
    assert pixels(load_dataset(images(folder))).tolist() == [[[1.0, 0.0, 1.0]]]


@pytest.mark.parametrize(
    ("image", "expected", "message"),
    [
        (Image.new("F", (2, 1), 0.5), None, r"has mode F; .*floating-point pixels have no fixed range"),
        (Image.new("LAB", (2, 1)), None, r"has mode LAB; .*convert the image to L, RGB or RGBA"),
        (Image.new("HSV", (2, 1)), None, r"has mode HSV"),
        (Image.fromarray(np.array([[0, 70000]], dtype=np.int32)), None, r"\(mode I, .*from 0 to 70000"),
        (Image.fromarray(np.array([[0, 6553]], dtype=np.int32)), [[[0.0, 6553 / 65535]]], None),
    ],
)
def test_other_modes(tmp_path, image, expected, message):
    if message is None:
        values, opacity = image_values(image, True, tmp_path / "x.tif")
        assert np.allclose(values, expected, atol=1e-6) and opacity is None
    else:
        with pytest.raises(DatasetError, match=r"image .*x.tif " + message):
            image_values(image, True, tmp_path / "x.tif")


def test_cmyk_and_animations_are_refused(tmp_path):
    frames = [Image.fromarray(np.full((3, 3), value, dtype=np.uint8)) for value in (0, 255)]
    folder = folder_of(tmp_path, a_jpg=Image.new("CMYK", (3, 3), (0, 0, 0, 0)))
    frames[0].save(folder / "b.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(DatasetError, match=r"a.jpg has mode CMYK; .*convert the image to RGB first"):
        load_samples(images(folder), [0])
    with pytest.raises(DatasetError, match=r"b.gif is an animation of 2 frames; expected a single image"):
        load_samples(images(folder), [1])


def test_exif_orientation_is_applied(tmp_path):
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise
    folder = folder_of(tmp_path)
    Image.fromarray(stored).save(folder / "a.png", exif=exif)
    assert np.array_equal(pixels(load_dataset(images(folder)))[0], np.rot90(stored, -1) / np.float32(255))


def test_folder_contents(tmp_path):
    """Other files and hidden files (e.g. macOS ``._a.png``) are ignored; corrupt images are named."""
    folder = folder_of(tmp_path, a_png=Image.new("L", (2, 2), 7), b_PNG=Image.new("L", (2, 2), 9))
    (folder / "notes.txt").write_text("not an image")
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / "sub.png").mkdir()
    assert dataset_size(images(folder)) == 2
    assert load_dataset(images(folder)).inputs[:, 0, 0, 0].tolist() == pytest.approx([7 / 255, 9 / 255])
    whole = (folder / "a.png").read_bytes()
    (folder / "c.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match=r"image .*c.png cannot be read \(.*\); expected a complete"):
        load_dataset(images(folder))
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"text holds no image files; expected .png"):
        dataset_size(images(only_text))


# labels CSV


@pytest.fixture
def three(tmp_path):
    folder = folder_of(tmp_path, **{f"{name}_png": Image.new("L", (2, 2), i) for i, name in enumerate("abc")})
    return folder, tmp_path / "labels.csv"


def test_a_missing_row_is_refused_naming_the_images(three):
    """The issue's case: the image without a row got label -1 and left the accuracy silently."""
    folder, csv = three
    csv.write_text("filename,label\na.png,3\nc.png,7\n")
    with pytest.raises(
        DatasetError,
        match=r"labels.csv has no row for 1 of the 3 images of .*images: \['b.png'\]; "
        r"expected one 'filename,label' row per image \(-1 for an unknown label\)",
    ):
        load_samples(images(folder, labels=str(csv)), [0])
    csv.write_text("filename,label\na.png,3\nc.png,7\nb.png,-1\n")
    assert load_dataset(images(folder, labels=str(csv))).labels.tolist() == [3, -1, 7]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,1\nb.png,2\nc.png,3\nd.png,4\n", r"line 4: 'd.png' is not one of the 3 images of"),
        ("a.png,1\nb.png,2\nc.png,3\nb.png,5\n", r"line 4: image 'b.png' is labelled again \(first on line"),
        ("a.png,1\nb.png,-2\nc.png,3\n", r"line 2: \['b.png', '-2'\]; expected 'filename,label'.*>= 0"),
        ("a.png,1.5\nb.png,2\nc.png,3\n", r"line 1: \['a.png', '1.5'\]"),  # not taken for a header
        ("a.png,1,x\nb.png,2\nc.png,3\n", r"line 1: \['a.png', '1', 'x'\]"),
        ("images/a.png,1\nb.png,2\nc.png,3\n", r"line 1: 'images/a.png' is not one of .* such as 'a.png'"),
    ],
)
def test_bad_rows_are_refused_naming_the_line(three, text, message):
    folder, csv = three
    csv.write_text(text)
    with pytest.raises(DatasetError, match=r"labels.csv " + message):
        load_dataset(images(folder, labels=str(csv)))


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_a_spreadsheet_export_is_read(three, separator):
    """UTF-8 with a byte-order mark, CRLF, a header, blank rows, empty trailing columns, quotes."""
    folder, csv = three
    rows = ["Filename;Label;", "", "c.png;7;", '"a.png";"3";', ";;", "b.png;0;"]
    text = "\r\n".join(row.replace(";", separator) for row in rows) + "\r\n"
    csv.write_bytes(text.encode("utf-8-sig"))
    assert load_dataset(images(folder, labels=str(csv))).labels.tolist() == [3, 0, 7]


def test_a_csv_in_another_encoding_is_refused(three):
    folder, csv = three
    csv.write_bytes("a.png,1\nb.png,2\nc.png,3\ncafé.png,4\n".encode("cp1252"))
    with pytest.raises(DatasetError, match=r"labels .*labels.csv is not UTF-8 text .*saved as UTF-8"):
        load_dataset(images(folder, labels=str(csv)))


# array files


@pytest.mark.parametrize("dtype", [">f8", ">i2", "<f2", "i1", "u2", ">u4", "?"])
def test_array_dtypes_and_byte_orders_keep_their_values(tmp_path, dtype):
    rng = np.random.default_rng(1)
    values = rng.integers(-100 if np.dtype(dtype).kind in "if" else 0, 100, (5, 2, 3))
    raw = (values > 0 if dtype == "?" else values).astype(dtype)
    np.save(tmp_path / "x.npy", raw)
    np.save(tmp_path / "y.npy", np.arange(5).astype(">i8"))
    with h5py.File(tmp_path / "x.h5", "w") as file:
        file["inputs"] = raw
    oracle = values.astype(np.float64) if dtype != "?" else (values > 0).astype(np.float64)
    npy = {"source": "array", "path": str(tmp_path / "x.npy"), "labels": str(tmp_path / "y.npy")}
    for spec in (npy, {"source": "array", "path": str(tmp_path / "x.h5")}):
        assert np.array_equal(load_dataset(spec).inputs[:, 0].numpy(), oracle)
        assert np.array_equal(load_samples(spec, [4, 1]).inputs[:, 0].numpy(), oracle[[4, 1]])
    assert load_samples(npy, [4, 1]).labels.tolist() == [4, 1]


class Payload:
    """Unpickling it makes a folder: proof that the file was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_object_arrays_are_refused_and_never_unpickled(tmp_path):
    marker = str(tmp_path / "unpickled")
    objects = np.empty((2, 2), dtype=object)
    objects[:] = Payload(marker)
    np.save(tmp_path / "x.npy", objects, allow_pickle=True)
    np.savez(tmp_path / "x.npz", inputs=objects)
    np.save(tmp_path / "numbers.npy", np.zeros((2, 2)))
    np.save(tmp_path / "y.npy", objects[:, 0], allow_pickle=True)
    objects_named = r"holds Python objects \(dtype object\); expected a numeric array \(.* never unpickled"
    for name in ("x.npy", "x.npz"):
        spec = {"source": "array", "path": str(tmp_path / name)}
        for read in (load_dataset, dataset_size, lambda spec: load_samples(spec, [0])):
            with pytest.raises(DatasetError, match=rf"{name}( member 'inputs')? " + objects_named):
                read(spec)
    labelled = {"source": "array", "path": str(tmp_path / "numbers.npy"), "labels": str(tmp_path / "y.npy")}
    with pytest.raises(DatasetError, match=r"y.npy " + objects_named):
        load_dataset(labelled)
    assert not os.path.exists(marker)


def test_values_beyond_float32_are_refused_with_nan_and_inf(tmp_path):
    inputs = np.zeros((4, 3))
    inputs[1, 2] = 1e39  # finite in the file, Inf as float32
    inputs[3, 0] = -np.inf
    with h5py.File(tmp_path / "big.h5", "w") as file:
        file["inputs"] = inputs
    with pytest.raises(
        DatasetError,
        match=r"dataset 'big' \(.*big.h5\): 2 samples contain NaN or Inf \(positions \[1, 3\]\); "
        r"expected finite inputs \(within float32's range",
    ):
        load_dataset({"source": "array", "path": str(tmp_path / "big.h5")})


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 4, 4)), r"inputs have shape \(0, 4, 4\); expected .*N >= 1"),
        (np.zeros((3, 2), dtype=complex), r"inputs have dtype complex128; expected real numbers"),
        (np.array([["a", "b"]]), r"inputs have dtype <U1; expected real numbers"),
    ],
)
def test_arrays_of_no_samples_or_no_numbers(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(DatasetError, match=r"x.npy: " + message):
        if array.shape[0] == 0:
            dataset_size({"source": "array", "path": str(tmp_path / "x.npy")})
        load_dataset({"source": "array", "path": str(tmp_path / "x.npy")})


def test_labels_below_minus_one_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    np.save(tmp_path / "y.npy", np.array([0, -1, -3]))
    spec = {"source": "array", "path": str(tmp_path / "x.npy"), "labels": str(tmp_path / "y.npy")}
    with pytest.raises(DatasetError, match=r"x.npy: labels \[-3\] at positions \[2\]; expected class labels"):
        load_dataset(spec)


def test_a_path_that_is_not_text_is_refused():
    with pytest.raises(DatasetError, match=r"dataset 'path' is 3; expected a file or folder path"):
        dataset_size({"source": "array", "path": 3})


# HDF5 files held by another process

WRITER = """
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "a") as file:  # HDF5's default: the file is locked while open
    file["inputs"] = np.arange(12.0).reshape(3, 4)
    file.flush()
    print("open", flush=True)
    sys.stdin.readline()
"""


def test_a_file_open_in_a_writer_is_read_without_locking(tmp_path):
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        pytest.skip("HDF5 file locking is switched off in this environment")
    path = tmp_path / "held.h5"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(OSError, match="lock"):  # what a locking reader meets
            h5py.File(path, "r")
        spec = {"source": "array", "path": str(path)}
        assert dataset_size(spec) == 3
        part = load_samples(spec, [2, 0]).inputs.numpy()
        assert np.array_equal(part, np.arange(12.0).reshape(3, 4)[[2, 0]])
    finally:
        writer.communicate("\n", timeout=30)


def test_a_file_still_being_written_is_named(tmp_path):
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as file:
        file["inputs"] = np.zeros((100, 10))
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(
        DatasetError, match=r"partial.h5 cannot be read as .h5 data \(.*\); if another program is still"
    ):
        dataset_size({"source": "array", "path": str(path)})


# sample selections


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"indices": [0, 2**64]}, r"samples.indices\[1\] is 18446744073709551616; expected integers "
         r"from 0 to 9 \(the dataset has 10 samples\)"),
        ({"indices": [3, -1]}, r"samples.indices\[1\] is -1; expected integers from 0 to 9"),
        ({"indices": [3.0]}, r"samples.indices\[0\] is 3.0; expected integers \(sample positions\)"),
        ({"indices": [1, 3.5, True]}, r"samples.indices\[1\] is 3.5 \(and 1 more\); expected integers"),
        ({"indices": [True]}, r"samples.indices\[0\] is True; expected integers"),
        ({"indices": ["3"]}, r"samples.indices\[0\] is '3'; expected integers"),
        ({"indices": [4, 2, 4, 2]}, r"samples.indices\[2\] repeats samples.indices\[0\] \(4\) "
         r"\(and 1 more\); expected each sample once"),
        ({"indices": 3}, r"samples.indices is 3; expected a non-empty list of integers"),
        ({"range": [2, 2**70]}, r"samples.range\[1\] is 1180591620717411303424; expected integers from 0 to"),
        ({"range": [7, 3]}, r"samples.range is \[7, 3\]; expected 0 <= start < stop <= 10 \(stop is"),
        ({"count": 2.0}, r"samples.count is 2.0; expected an integer from 1 to 10 \(the dataset has 10"),
        ({"count": 2**64}, r"samples.count is 18446744073709551616; expected an integer from 1 to 10"),
        ([1, 2], r"samples is \[1, 2\]; expected a mapping"),
    ],
)  # fmt: skip
def test_selection_faults_name_the_key_and_the_dataset_size(selection, message):
    with pytest.raises(DatasetError, match=message):
        select_samples(10, selection)


def test_selection_messages_name_the_key_given():
    with pytest.raises(DatasetError, match=r"render.samples.indices\[0\] is 12; .*\(the dataset has 3 samp"):
        select_samples(3, {"indices": [12]}, key="render.samples")
    with pytest.raises(DatasetError, match=r"samples.all selects no samples \(the dataset has 0 samples\)"):
        select_samples(0, {"all": True})
    assert select_samples(10, {"indices": [np.int64(9), 0]}).tolist() == [9, 0]


@pytest.mark.parametrize(
    ("positions", "error", "message"),
    [
        ([True, False], DatasetError, "expected a non-empty sequence of integers"),
        (np.array([2**64 - 1], dtype=np.uint64), IndexError, r"outside dataset 'x' .* of 4 samples"),
        ([2**70], DatasetError, "expected a non-empty sequence of integers"),
    ],
)
def test_load_samples_positions(tmp_path, positions, error, message):
    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    with pytest.raises(error, match=message):
        load_samples({"source": "array", "path": str(tmp_path / "x.npy")}, positions)


@pytest.mark.workflow
def test_the_workflow_names_a_huge_index_when_it_plans(tmp_path):
    """The issue's case: an index beyond 2**63 raised OverflowError while the Snakefile was parsed."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = {
        "models": {"net": {"architecture": "digits_cnn"}},
        "datasets": {"digits": {"source": "digits"}},
        "analyses": [{"model": "net", "dataset": "digits"}],
        "samples": {"indices": [0, 2**64]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--snakefile", os.path.join(repo, "Snakefile")]
    result = subprocess.run(
        [*command, "--directory", str(tmp_path), "--cores", "1", "--dry-run"], capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "OverflowError" not in output, textwrap.shorten(output, 3000)
    assert "samples.indices[1] is 18446744073709551616; expected integers from 0 to 359" in output
