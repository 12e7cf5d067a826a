"""Model faults: each gives a clear refusal naming the culprit, or a correct result.

- A model that changes its input in place: the input layer holds the input as given (oracle: the
  dataset's own values, read with scikit-learn), at every granularity, and the layers and edges
  after the in-place operation read what it wrote (oracle: numpy on the given input).
- What a model returns (the policy of :func:`nsp_pipeline.model.records.check_output`): a tuple,
  list or dict is refused at export and at extraction; a tensor that is not ``(batch, classes)``
  gives a warning and no predictions.
- NaN or Inf weights are refused at export and at load, naming the parameters.
- A model artifact replaced by another: the stages that get the config entry and metadata refuse it.
- A forward pass that changes the model's weights or buffers or draws random numbers is refused, and
  so is an in-place change through a view, and extracting several samples through a batch norm
  without running statistics.
- Tracing a model again: its layers hold what they held before later in-place operations (oracle:
  NumPy), its purity is checked again (the parameters' values compared) after an optimizer step or
  new weights, not otherwise, and its fx graph is traced again after a module or plain attribute
  changes (oracle: NumPy on the changed model); a traced model is still collected.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import weakref

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from nsp_pipeline.core.errors import TraceError, UnsupportedLayerError
from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.io import hdf5
from nsp_pipeline.model import capture
from nsp_pipeline.model.artifact import ModelError, load_model, model_checksum
from nsp_pipeline.model.capture import trace
from nsp_pipeline.model.records import check_output
from nsp_pipeline.pipeline import stages

DIGITS = {"source": "digits", "split": "all"}

MODULE = """
import torch
import torch.nn.functional as F
from torch import nn


class Clamping(nn.Module):
    '''Clamps its input in place, then a linear layer.'''

    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x.clamp_(0, 0.25)
        return self.fc(self.flatten(x))


class BatchStatistics(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.BatchNorm2d(2, track_running_stats=False)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(72, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.norm(self.conv(x))))


class Returns(nn.Module):
    '''Returns what its class attribute RETURNS says: logits, a tuple, a dict or one score.'''

    input_shape = (1, 8, 8)
    RETURNS = "logits"

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        logits = self.fc(self.flatten(x))
        if self.RETURNS == "tuple":
            return logits, x
        if self.RETURNS == "dict":
            return {"logits": logits}
        if self.RETURNS == "score":
            return logits[:, :1]
        return logits
"""


@pytest.fixture
def user_models(tmp_path):
    (tmp_path / "nets.py").write_text(MODULE)
    return tmp_path


def export(folder, entry, name="model"):
    model_path, metadata_path = folder / f"{name}.pt", folder / f"{name}.json"
    stages.export_model(entry, model_path, metadata_path, base_dir=folder)
    return model_path, metadata_path


def digit_images(ids) -> np.ndarray:
    """The oracle: scikit-learn's digits, scaled to [0, 1] as the dataset spec says."""
    return load_digits().images[np.asarray(ids)] / 16.0


# ---------------------------------------------------------------------------------------------
# A model that changes its input in place


class ClampsInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        x.clamp_(0, 0.25)
        return self.fc(self.flatten(x))


@pytest.mark.parametrize("granularity", ["children", "ops", "merged"])
def test_input_layer_holds_the_input_as_given(granularity):
    torch.manual_seed(0)
    given = torch.as_tensor(digit_images(range(4)), dtype=torch.float32).unsqueeze(1)
    caller = given.clone()
    recorded = trace(ClampsInput(), caller, granularity)
    assert np.array_equal(recorded.values[0].numpy(), digit_images(range(4))[:, None].astype(np.float32))
    assert recorded.values[0].max() == 1.0
    assert torch.equal(caller, given), "the caller's tensor was changed"
    # What the layers after the in-place operation read is the clamped input (numpy oracle).
    clamped = np.clip(digit_images(range(4)), 0, 0.25).reshape(4, -1).astype(np.float32)
    first_read = recorded.calls[1].inputs[0].reshape(4, -1).numpy()
    if granularity == "children":  # the clamp between children is invisible: the first child reads its result
        assert np.array_equal(first_read, clamped)
        return
    assert recorded.layout.layers[1].kind == "clamp_"
    assert np.array_equal(recorded.values[1].reshape(4, -1).numpy(), clamped)
    assert np.array_equal(first_read, digit_images(range(4)).reshape(4, -1).astype(np.float32))
    assert recorded.layout.layers[2].parents == (1,), "the next layer reads what clamp_ wrote"
    assert np.array_equal(recorded.calls[2].inputs[0].reshape(4, -1).numpy(), clamped)


@pytest.mark.parametrize("granularity", ["children", "ops", "merged"])
def test_in_place_first_layer_keeps_the_input(granularity):
    """An in-place ReLU module reading the input: the input layer keeps its negative values."""
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(6, 2))
    given = np.arange(-5.0, 7.0, dtype=np.float32).reshape(2, 1, 6)
    recorded = trace(model, torch.from_numpy(given.copy()), granularity)
    assert np.array_equal(recorded.values[0].numpy(), given)
    assert np.array_equal(recorded.values[1].reshape(2, 1, 6).numpy(), np.maximum(given, 0))


def test_edges_of_an_in_place_operation_use_the_values_it_read():
    """incl=False keeps input -> clamp_ edges where the given input is in [0, 0.25] (clamp's gradient)."""
    image = torch.as_tensor(digit_images([0]), dtype=torch.float32).unsqueeze(1)
    graph = build_graph(ClampsInput(), image, "ops", incl=False)
    clamp = graph.layout.slice(1)
    kept = np.array([graph.parents(node).size for node in range(clamp.start, clamp.stop)])
    pixels = digit_images([0]).reshape(-1)
    assert np.array_equal(kept, ((pixels >= 0) & (pixels <= 0.25)).astype(int))
    assert 0 < kept.sum() < 64


def test_extracted_input_layer_is_the_dataset(user_models, tmp_path):
    model_path, _ = export(user_models, {"module": "nets.py", "class": "Clamping"})
    out = tmp_path / "activations.h5"
    for granularity in ("children", "ops", "merged"):
        stages.extract_activations(model_path, DIGITS, [5, 0, 7], out, granularity)
        pattern = hdf5.read_pattern(out)
        assert pattern.sample_ids.tolist() == [5, 0, 7]
        assert np.array_equal(pattern.layer(0)[:, 0], digit_images([5, 0, 7])), granularity
        assert pattern.layer(0).max() == 1.0
        out.unlink()


def test_in_place_change_through_a_view_is_refused():
    class ThroughView(nn.Module):
        def forward(self, x):
            flat = x.view(x.shape[0], -1)
            flat.relu_()  # also changes x, which is read below
            return flat + x.view(x.shape[0], -1)

    with pytest.raises(UnsupportedLayerError, match=r"reads layer 'input' after it was changed in place"):
        trace(ThroughView(), torch.randn(2, 4), "ops")


# ---------------------------------------------------------------------------------------------
# What the model returns


@pytest.mark.parametrize(
    ("returns", "described"),
    [
        ("tuple", r"a tuple of 2 \(a tensor of shape \(2, 10\), a tensor of shape \(2, 1, 8, 8\)\)"),
        ("dict", r"a dict with keys \['logits'\]"),
    ],
)
def test_export_refuses_a_model_returning_a_container(user_models, returns, described):
    (user_models / "nets.py").write_text(MODULE.replace('RETURNS = "logits"', f'RETURNS = "{returns}"'))
    expected = rf"model module 'nets.py' class 'Returns' returns {described}"
    with pytest.raises(ModelError, match=expected) as error:
        export(user_models, {"module": "nets.py", "class": "Returns"})
    assert "expected one tensor of shape (batch, classes)" in str(error.value)
    assert "wrap the model" in str(error.value)
    assert not (user_models / "model.pt").exists()


def test_extraction_refuses_a_model_that_now_returns_a_tuple(user_models, tmp_path):
    """The model's source changed after export: extraction names the artifact and what it returned."""
    model_path, _ = export(user_models, {"module": "nets.py", "class": "Returns"})
    (user_models / "nets.py").write_text(MODULE.replace('RETURNS = "logits"', 'RETURNS = "tuple"'))
    out = tmp_path / "activations.h5"
    with pytest.raises(TraceError, match=rf"model {model_path} returns a tuple of 2 .* for a batch of 3"):
        stages.extract_activations(model_path, DIGITS, [0, 1, 2], out)
    assert not out.exists()


def test_a_single_score_gives_no_predictions_with_a_warning(user_models, tmp_path, caplog):
    (user_models / "nets.py").write_text(MODULE.replace('RETURNS = "logits"', 'RETURNS = "score"'))
    train = {"source": "digits", "split": "all"}
    model_path, metadata_path = user_models / "model.pt", user_models / "model.json"
    entry = {"module": "nets.py", "class": "Returns"}
    with caplog.at_level(logging.WARNING):
        stages.export_model(entry, model_path, metadata_path, train, user_models)
    assert "returns a tensor of shape (2, 1) for a batch of 2, not (batch, classes)" in caplog.text
    metadata = json.loads(metadata_path.read_text())
    assert metadata["accuracy"] is None and metadata["output_shape"] == [1]
    caplog.clear()
    out = tmp_path / "activations.h5"
    with caplog.at_level(logging.WARNING):
        stages.extract_activations(model_path, DIGITS, [0, 1], out)
    assert f"model {model_path} returns a tensor of shape (2, 1)" in caplog.text
    assert "no predictions (-1)" in caplog.text
    assert hdf5.read_pattern(out).predictions is None


def test_output_policy():
    logits = torch.randn(3, 4)
    assert check_output(logits, 3) is None
    assert "not (batch, classes)" in check_output(torch.randn(3, 1), 3)
    assert "not (batch, classes)" in check_output(torch.randn(3, 2, 5), 3)
    with pytest.raises(TraceError, match=r"returns a tensor of shape \(4,\) for a batch of 1; expected a"):
        check_output(torch.randn(4), 1)
    with pytest.raises(TraceError, match=r"returns a list of 1 \(a tensor of shape \(3, 4\)\)"):
        check_output([logits], 3)
    with pytest.raises(TraceError, match=r"returns a NoneType"):
        check_output(None, 3)


# ---------------------------------------------------------------------------------------------
# NaN and Inf weights


def test_export_refuses_nan_weights_naming_them(user_models):
    from nsp_pipeline.model.architectures import DigitsCNN

    state = DigitsCNN().state_dict()
    state["fc.weight"][0, :3] = float("nan")
    state["conv1.bias"][1] = float("inf")
    torch.save(state, user_models / "weights.pt")
    entry = {"architecture": "digits_cnn", "weights": "weights.pt"}
    with pytest.raises(ModelError) as error:
        export(user_models, entry)
    message = str(error.value)
    assert "model architecture 'digits_cnn', weights" in message and "weights.pt" in message
    assert "['conv1.bias (1 of 8)', 'fc.weight (3 of 640)'] hold NaN or Inf" in message
    assert not (user_models / "model.pt").exists()


def test_load_refuses_an_artifact_with_nan_weights(user_models):
    model_path, _ = export(user_models, {"architecture": "digits_cnn"})
    artifact = torch.load(model_path, weights_only=True)
    artifact["state_dict"]["conv2.weight"].view(-1)[5] = float("nan")
    artifact["checksum"] = model_checksum(artifact["state_dict"])
    torch.save(artifact, model_path)
    with pytest.raises(
        ModelError,
        match=rf"model artifact {model_path}: parameters or buffers "
        r"\['conv2.weight \(1 of 1152\)'\] hold NaN or Inf .*forcerun export_model",
    ):
        load_model(model_path)


# ---------------------------------------------------------------------------------------------
# A model artifact replaced by another


def test_swapped_artifact_is_refused_by_the_stages_that_know_its_entry(user_models, tmp_path):
    entry = {"architecture": "digits_cnn", "seed": 1}
    model_path, metadata_path = export(user_models, entry)
    other, _ = export(user_models, {"architecture": "digits_cnn", "seed": 2}, "other")
    shutil.copyfile(other, model_path)
    expected = rf"model artifact {model_path} was exported from the entry .*'seed': 2.*keys \['seed'\] differ"
    with pytest.raises(ModelError, match=expected) as error:
        stages.build_graph_file(model_path, tmp_path / "graph.h5", entry=entry, metadata_path=metadata_path)
    assert "snakemake --forcerun export_model" in str(error.value)
    with pytest.raises(ModelError, match=expected):
        stages.extract_activations(model_path, DIGITS, [0], tmp_path / "a.h5", entry=entry)
    assert not (tmp_path / "graph.h5").exists() and not (tmp_path / "a.h5").exists()


def test_artifact_must_agree_with_its_metadata(user_models, tmp_path):
    """Same entry, other weights (the weights file changed): model.json no longer describes model.pt."""
    from nsp_pipeline.model.architectures import DigitsCNN

    entry = {"architecture": "digits_cnn", "weights": "w.pt"}
    torch.manual_seed(1)
    torch.save(DigitsCNN().state_dict(), user_models / "w.pt")
    model_path, metadata_path = export(user_models, entry)
    torch.manual_seed(2)
    torch.save(DigitsCNN().state_dict(), user_models / "w.pt")
    other, _ = export(user_models, entry, "other")
    shutil.copyfile(other, model_path)
    described = json.loads(metadata_path.read_text())["checksum"][:12]
    expected = rf"{metadata_path} describes the model with checksum {described}\.\.\., but {model_path} "
    with pytest.raises(ModelError, match=rf"{expected}holds .*forcerun export_model"):
        stages.build_graph_file(model_path, tmp_path / "graph.h5", entry=entry, metadata_path=metadata_path)


def test_the_same_entry_in_another_key_order_is_accepted(user_models, tmp_path):
    entry = {"architecture": "digits_cnn", "seed": 3, "kwargs": {}}
    model_path, metadata_path = export(user_models, entry)
    reordered = {"kwargs": {}, "seed": 3, "architecture": "digits_cnn"}
    stages.build_graph_file(model_path, tmp_path / "graph.h5", entry=reordered, metadata_path=metadata_path)
    assert hdf5.read_graph(tmp_path / "graph.h5").n_nodes == 1866


# ---------------------------------------------------------------------------------------------
# Forward passes that are not a function of each sample alone


class ChangesWeights(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("calls", torch.zeros(()))
        self.how = how

    def forward(self, x):
        if self.how == "in place":
            self.fc.weight.mul_(0.5)
        elif self.how == "data":
            self.fc.weight.data += 1
        elif self.how == "buffer":
            self.calls = self.calls + 1
        return self.fc(x)


#: (granularity, how, changed). Under 'ops' torch.fx records ``.data += 1`` out of place, on a
#: copy: the recorded program leaves the weights alone.
CHANGES = [
    ("children", "in place", "fc.weight"),
    ("children", "data", "fc.weight"),
    ("children", "buffer", "calls"),
    ("ops", "in place", "fc.weight"),
    ("ops", "buffer", "calls"),
]


@pytest.mark.parametrize(("granularity", "how", "changed"), CHANGES)
def test_forward_that_changes_the_model_is_refused(granularity, how, changed):
    expected = rf"ChangesWeights changes its parameters or buffers \['{changed}'\]"
    with pytest.raises(TraceError, match=expected):
        trace(ChangesWeights(how), torch.randn(2, 4), granularity)


def test_forward_drawing_random_numbers_is_refused():
    class FunctionalDropout(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return torch.nn.functional.dropout(self.fc(x), 0.5)  # training=True whatever the mode

    with pytest.raises(TraceError, match="FunctionalDropout draws random numbers when it runs in eval mode"):
        trace(FunctionalDropout(), torch.randn(2, 4), "children")
    dropout = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    recorded = trace(dropout, torch.randn(2, 4), "children")  # eval mode switches nn.Dropout off
    assert torch.equal(recorded.values[2], recorded.values[1])
    assert dropout.training, "the model's mode is restored"


def test_batch_statistics_are_refused_for_several_samples(user_models, tmp_path):
    model_path, _ = export(user_models, {"module": "nets.py", "class": "BatchStatistics"})
    with pytest.raises(
        TraceError,
        match=rf"model {model_path}: batch norm \['norm'\] has no running "
        r"statistics, so each of the 3 samples .*samples_per_job: 1",
    ):
        stages.extract_activations(model_path, DIGITS, [0, 1, 2], tmp_path / "three.h5")
    stages.extract_activations(model_path, DIGITS, [1], tmp_path / "one.h5")
    assert hdf5.read_pattern(tmp_path / "one.h5").sample_ids.tolist() == [1]


# ---------------------------------------------------------------------------------------------
# Tracing a model again: what the first trace checked and traced is reused while the model stays


def numpy_linear(inputs, layer: nn.Linear) -> np.ndarray:
    """The oracle: a linear layer in float64 NumPy."""
    weight, bias = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
    return inputs.double().numpy() @ weight.T + bias


class ReluInPlace(nn.Module):
    """A linear layer, then a ReLU writing into its output: a module with ``inplace=True`` (which
    tracing knows writes in place) or ``torch.clamp(h, min=0, out=h)`` (which it does not)."""

    def __init__(self, how):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.relu = nn.ReLU(inplace=True) if how == "module" else None

    def forward(self, x):
        h = self.fc(x)
        return torch.clamp(h, min=0, out=h) if self.relu is None else self.relu(h)


#: (how the ReLU writes, granularity, layer kinds, runs of the model per trace)
IN_PLACE = [
    pytest.param("module", "ops", ["input", "Linear", "ReLU"], 1, id="module-ops"),
    pytest.param("out", "ops", ["input", "Linear", "clamp"], 2, id="out-ops"),
    pytest.param("module", "children", ["input", "Linear", "ReLU"], 1, id="module-children"),
    pytest.param("out", "children", ["input", "Linear"], 2, id="out-children"),
]


@pytest.mark.parametrize(("how", "granularity", "kinds", "runs"), IN_PLACE)
def test_traced_twice_a_layer_keeps_what_it_held_before_an_in_place_operation(how, granularity, kinds, runs):
    """Where tracing does not know that an operation writes in place, the model runs a second time."""
    torch.manual_seed(0)
    model, inputs = ReluInPlace(how), torch.randn(5, 4)
    linear = numpy_linear(inputs, model.fc)
    assert (linear < 0).any(), "the ReLU overwrites some values"
    fc_calls = []
    model.fc.register_forward_hook(lambda *_: fc_calls.append(1))
    for recorded in (trace(model, inputs, granularity), trace(model, inputs, granularity)):
        assert [layer.kind for layer in recorded.layout.layers] == kinds
        np.testing.assert_allclose(recorded.values[1].numpy(), linear, rtol=1e-5, atol=1e-6)
        for relu in (*recorded.values[2:], recorded.model_output):
            np.testing.assert_allclose(relu.numpy(), np.maximum(linear, 0), rtol=1e-5, atol=1e-6)
    assert len(fc_calls) == 2 * runs


class ChangesWeightsWhenAsked(nn.Module):
    """Changes its weight when ``asked["how"]`` says so; ``asked`` is a dict, which tracing does not watch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.asked = {"how": None}

    def forward(self, x):
        if self.asked["how"] == "data":
            self.fc.weight.data.mul_(1.5)  # leaves the version counter alone
        elif self.asked["how"] == "in place":
            self.fc.weight.mul_(1.5)
        return self.fc(x)


@pytest.fixture
def fingerprint_calls(monkeypatch):
    """How often the parameters' values are compared (the expensive part of the purity check)."""
    calls = []

    def counted(tensors):
        calls.append(sorted(tensors))
        return fingerprints(tensors)

    fingerprints = capture._fingerprints
    monkeypatch.setattr(capture, "_fingerprints", counted)
    return calls


def test_purity_is_checked_again_after_an_optimizer_step(fingerprint_calls):
    model, inputs = ChangesWeightsWhenAsked(), torch.randn(2, 4)
    trace(model, inputs, "children")
    assert len(fingerprint_calls) == 2, "before and after the first run"
    trace(model, inputs, "children")
    assert len(fingerprint_calls) == 2, "the model did not change: not compared again"
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(inputs).square().sum().backward()
    optimizer.step()
    model.asked["how"] = "data"
    with pytest.raises(
        TraceError, match=r"ChangesWeightsWhenAsked changes its parameters or buffers \['fc.weight'\]"
    ):
        trace(model, inputs, "children")
    assert len(fingerprint_calls) == 4


def test_purity_is_checked_again_after_new_weights_are_assigned(fingerprint_calls):
    model, inputs = ChangesWeightsWhenAsked(), torch.randn(2, 4)
    trace(model, inputs, "children")
    model.fc.weight = nn.Parameter(torch.ones(3, 4))
    recorded = trace(model, inputs, "children")
    assert len(fingerprint_calls) == 4
    np.testing.assert_allclose(
        recorded.values[1].numpy(), numpy_linear(inputs, model.fc), rtol=1e-5, atol=1e-6
    )


def test_a_verified_model_is_refused_if_its_forward_starts_writing_weights_in_place(fingerprint_calls):
    model, inputs = ChangesWeightsWhenAsked(), torch.randn(2, 4)
    trace(model, inputs, "children")
    model.asked["how"] = "in place"  # bumps the weight's version counter when it runs
    with pytest.raises(TraceError, match=r"changes its parameters or buffers \['fc.weight'\]"):
        trace(model, inputs, "children")
    assert len(fingerprint_calls) == 2, "seen by the version counters alone"


def test_a_data_edit_that_starts_after_verification_goes_unseen(fingerprint_calls):
    """The documented limit: while the weights' versions stay, their values are not compared again."""
    model, inputs = ChangesWeightsWhenAsked(), torch.randn(2, 4)
    trace(model, inputs, "children")
    weight = model.fc.weight.detach().clone()
    model.asked["how"] = "data"
    trace(model, inputs, "children")
    assert len(fingerprint_calls) == 2
    assert torch.equal(model.fc.weight.detach(), weight * 1.5)


class LinearAct(nn.Module):
    """A linear map through ``F.linear`` (torch.fx reads the weight as an attribute), an activation
    module, and a doubling that a plain attribute switches on (torch.fx bakes the branch in)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 4))
        self.act = nn.ReLU()
        self.doubled = False

    def forward(self, x):
        y = self.act(torch.nn.functional.linear(x, self.weight))
        return y * 2 if self.doubled else y


def test_the_graph_is_traced_again_only_when_the_model_changes(monkeypatch):
    traced = []

    def counted(model):
        traced.append(type(model).__name__)
        return fx_trace(model)

    fx_trace = capture.fx_trace
    monkeypatch.setattr(capture, "fx_trace", counted)
    torch.manual_seed(0)
    model, inputs = LinearAct(), torch.randn(5, 4)

    def expected(act):
        return act(inputs.double().numpy() @ model.weight.detach().double().numpy().T)

    def check(recorded, kinds, last):
        assert [layer.kind for layer in recorded.layout.layers] == kinds
        np.testing.assert_allclose(recorded.values[-1].numpy(), last, rtol=1e-5, atol=1e-6)

    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    check(trace(model, inputs, "ops"), ["input", "linear", "ReLU"], expected(relu))
    check(trace(model, inputs, "merged"), ["input", "linear"], expected(relu))
    assert len(traced) == 1
    with torch.no_grad():
        model.weight.mul_(-1)  # trained: other values, the same tensor
    check(trace(model, inputs, "ops"), ["input", "linear", "ReLU"], expected(relu))
    assert len(traced) == 1
    model.act = nn.Tanh()
    check(trace(model, inputs, "ops"), ["input", "linear", "Tanh"], expected(np.tanh))
    model.doubled = True
    check(trace(model, inputs, "ops"), ["input", "linear", "Tanh", "mul"], 2 * expected(np.tanh))
    model.weight = nn.Parameter(torch.randn(3, 4))
    check(trace(model, inputs, "ops"), ["input", "linear", "Tanh", "mul"], 2 * expected(np.tanh))
    assert len(traced) == 4


class PoolsBetweenChildren(nn.Module):
    """Global pooling in ``forward`` between its children: 'children' traces it with torch.fx too."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_a_traced_model_is_not_kept_alive():
    model = PoolsBetweenChildren()
    for granularity in ("children", "ops", "merged"):
        recorded = trace(model, torch.randn(2, 1, 5, 5), granularity)
        assert recorded.layout.names[-1] == "fc"
    collected = weakref.ref(model)
    del model, recorded
    gc.collect()
    assert collected() is None
