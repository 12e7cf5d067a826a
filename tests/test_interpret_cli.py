"""The interpret commands (one per method) and the interpret stage, against direct library calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import error_line, run
from test_cli import pdf_pages

from nsp_pipeline.data.loading import load_samples
from nsp_pipeline.interpret import attributions
from nsp_pipeline.interpret.targets import Target
from nsp_pipeline.io import hdf5
from nsp_pipeline.model.artifact import load_model
from nsp_pipeline.pipeline.cli import parse_target

CONFIG = """\
models:
  tiny:
    architecture: digits_cnn
    seed: 1
datasets:
  digits: {source: digits, split: test}
analyses:
  - {model: tiny, dataset: digits}
interpret:
  targets: [{layer: fc, unit: [2]}]
"""
SAMPLES = (4, 9)
DIGITS = {"source": "digits", "split": "test"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fc@3", {"layer": "fc", "unit": [3]}),
        ("conv2:5/mean", {"layer": "conv2", "channel": 5, "reduction": "mean"}),
        ("conv2:5@1,2", {"layer": "conv2", "channel": 5, "unit": [1, 2]}),
        ("pool2/max", {"layer": "pool2", "reduction": "max"}),
    ],
)
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("fc@x", "integer channel and unit"), ("conv2:1/sum", "mean or max"), (":1", "no layer name")],
)
def test_parse_target_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_target(text)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("interpret_cli")
    config = root / "config.yaml"
    config.write_text(CONFIG)
    model = root / "m.pt"
    assert (
        run(
            "export-model",
            "--config",
            config,
            "--model",
            "tiny",
            "--out",
            model,
            "--metadata",
            root / "m.json",
        )
        == 0
    )
    net, metadata = load_model(model)
    inputs = load_samples(DIGITS, list(SAMPLES), tuple(metadata["input_shape"])).inputs
    return root, config, model, net, inputs


def test_smoothgrad_command_equals_the_function(exported):
    root, config, model, net, inputs = exported
    out = root / "smoothgrad.h5"
    common = ("--config", config, "--dataset", "digits", "--samples", *SAMPLES)
    assert (
        run("smoothgrad", model, *common, "--target", "conv2:1/max", "--n", 5, "--sigma", 0.3, "--out", out)
        == 0
    )
    maps = hdf5.read_attribution_maps(out)
    assert maps.methods == ("smoothgrad",) and maps.parameters["smoothgrad"]["n"] == 5
    expected = attributions.smoothgrad(
        net, inputs, [Target("conv2", channel=1, reduction="max")], n=5, sigma=0.3
    )
    np.testing.assert_array_equal(
        maps.maps["smoothgrad"], expected.numpy() if torch.is_tensor(expected) else expected
    )
    assert maps.sample_ids.tolist() == load_samples(DIGITS, list(SAMPLES)).ids.tolist()


def test_occlusion_command_with_pictures_and_the_configs_target(exported):
    root, config, model, net, inputs = exported
    out, pdf = root / "occlusion.h5", root / "occlusion.pdf"
    common = ("--config", config, "--dataset", "digits", "--samples", *SAMPLES)
    assert run("occlusion", model, *common, "--window", 2, "--stride", 2, "--out", out, "--pdf", pdf) == 0
    maps = hdf5.read_attribution_maps(out)
    assert [t["layer"] for t in maps.targets] == ["fc"]
    # the brute-force oracle: one forward pass per occluded copy
    with torch.no_grad():
        base = net(inputs)[:, 2]
        grid = np.zeros((len(SAMPLES), 4, 4))
        for i in range(4):
            for j in range(4):
                occluded = inputs.clone()
                occluded[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = 0.0
                grid[:, i, j] = (base - net(occluded)[:, 2]).numpy()
    np.testing.assert_allclose(maps.maps["occlusion"][:, 0], grid, rtol=1e-5, atol=1e-6)
    assert pdf_pages(pdf) == len(SAMPLES)


def test_unknown_layer_is_named(exported, capsys):
    root, config, model, _, _ = exported
    common = ("--config", config, "--dataset", "digits", "--samples", 0)
    assert run("saliency", model, *common, "--target", "nope@1", "--out", root / "x.h5") == 1
    assert "nope" in error_line(capsys)
    assert not (root / "x.h5").exists()


def test_minimal_images_command(exported):
    from nsp_pipeline.interpret.minimal_images import minimal_parcel_image

    root, config, model, net, inputs = exported
    out, pdf = root / "minimal.h5", root / "minimal.pdf"
    common = ("--config", config, "--dataset", "digits", "--samples", SAMPLES[0])
    assert run("minimal-images", model, *common, "--methods", "parcels", "--out", out, "--pdf", pdf) == 0
    ((sample_id, stored),) = hdf5.read_minimal_images(out)
    (expected,) = minimal_parcel_image(net, inputs[0], [Target("fc", unit=(2,))])
    assert sample_id == load_samples(DIGITS, [SAMPLES[0]]).ids[0]
    np.testing.assert_array_equal(stored.minimal_set, expected.minimal_set)
    np.testing.assert_allclose(stored.greedy_curve, expected.greedy_curve, rtol=1e-6)
    assert pdf_pages(pdf) == 1


def test_synthesize_command_equals_the_function(exported):
    from nsp_pipeline.interpret.synthesis import synthesize

    root, _, model, net, _ = exported
    out, pdf, sheet = root / "synthesis.h5", root / "synthesis.pdf", root / "sheet.pdf"
    options = ("--steps", 12, "--value-range", 0, 1, "--parameterisation", "pixel")
    assert (
        run("synthesize", model, "--layers", "conv2", *options, "--out", out, "--pdf", pdf, "--sheet", sheet)
        == 0
    )
    stored = hdf5.read_synthesis(out)
    targets = [Target("conv2", channel=c, reduction="mean") for c in range(16)]
    expected = synthesize(net, targets, (1, 8, 8), steps=12, value_range=(0.0, 1.0), parameterisation="pixel")
    np.testing.assert_allclose(stored.inputs, expected.inputs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stored.trajectory, expected.trajectory, rtol=1e-5, atol=1e-6)
    assert pdf_pages(pdf) == 16 and pdf_pages(sheet) == 1
