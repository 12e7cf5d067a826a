"""Built-in architectures, deterministic training, model entries and the model artifact."""

import io
import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from nsp_pipeline import build_graph
from nsp_pipeline.data.loading import load_dataset
from nsp_pipeline.model.architectures import ARCHITECTURES, DigitsCNN, MnistTutorialNet
from nsp_pipeline.model.artifact import ModelError, build_model, export_model, load_model, model_checksum
from nsp_pipeline.model.training import DEFAULT_TRAINING, accuracy, train_classifier

USER_MODULE = """
import torch
from torch import nn


class TinyNet(nn.Module):
    input_shape = (4,)

    def __init__(self, hidden=3):
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))
"""


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"source": "digits", "split": "train"}), load_dataset({"source": "digits"})


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """The default recipe's artifact, exported once for the whole module."""
    folder = tmp_path_factory.mktemp("trained")
    start = time.perf_counter()
    metadata = export_model({"architecture": "digits_cnn", "train": True}, folder / "model.pt", ".", *digits)
    return folder / "model.pt", metadata, time.perf_counter() - start


@pytest.fixture
def user_module(tmp_path):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "tiny.py").write_text(USER_MODULE)
    return {"module": "nets/tiny.py", "class": "TinyNet", "kwargs": {"hidden": 5}}


def state_bytes(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


# architectures


def test_registry_and_input_shapes():
    digits = {"digits_cnn": DigitsCNN, "mnist_tutorial": MnistTutorialNet}
    assert digits.items() <= ARCHITECTURES.items()
    assert DigitsCNN.input_shape == (1, 8, 8) and MnistTutorialNet.input_shape == (1, 28, 28)
    for cls in digits.values():
        assert cls()(torch.zeros(2, *cls.input_shape)).shape == (2, 10)


def test_digits_cnn_children_are_all_layers():
    graph = build_graph(DigitsCNN().eval(), torch.rand(1, 1, 8, 8))
    names = [layer.name for layer in graph.layout.layers]
    assert names == ["input", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc"]
    assert graph.indptr.size - 1 == 1866


# training


def test_default_recipe_reaches_95_percent(trained):
    _, metadata, seconds = trained
    print(f"\nDEFAULT_TRAINING {DEFAULT_TRAINING}: test accuracy {metadata['accuracy']:.4f}, {seconds:.1f} s")
    assert metadata["accuracy"] >= 0.95
    assert metadata["training"]["test_accuracy"] == metadata["accuracy"]
    assert len(metadata["training"]["train_loss"]) == DEFAULT_TRAINING["epochs"]
    assert metadata["training"]["seconds"] < 30


def test_training_is_bit_identical_and_restores_torch_state(digits):
    train, test = digits
    runs = []
    for _ in range(2):
        model = build_model({"architecture": "digits_cnn", "seed": 3})
        threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
        metrics = train_classifier(model, train, test, epochs=2, learning_rate=0.01, batch_size=64, seed=5)
        assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), rng)
        assert not torch.are_deterministic_algorithms_enabled() and not model.training
        runs.append((state_bytes(model), metrics["train_loss"], metrics["test_accuracy"]))
    assert runs[0] == runs[1]
    other = build_model({"architecture": "digits_cnn", "seed": 3})
    train_classifier(other, train, epochs=2, learning_rate=0.01, batch_size=64, seed=6)
    assert state_bytes(other) != runs[0][0]


def test_training_refuses_unknown_labels_and_bad_arguments(digits):
    train, _ = digits
    unlabelled = type(train)(train.inputs, np.full(len(train), -1), train.ids, "unlabelled")
    with pytest.raises(
        ValueError, match=r"'unlabelled': labels span \[-1, -1\]; expected known labels in \[0, 9\]"
    ):
        train_classifier(DigitsCNN(), unlabelled, epochs=1)
    assert accuracy(DigitsCNN(), unlabelled) is None
    with pytest.raises(ValueError, match="expected positive values"):
        train_classifier(DigitsCNN(), train, epochs=0)


# build_model


def test_architecture_entries():
    first = build_model({"architecture": "digits_cnn"})
    assert not first.training and isinstance(first, DigitsCNN)
    assert model_checksum(first) == model_checksum(build_model({"architecture": "digits_cnn", "seed": 0}))
    assert model_checksum(first) != model_checksum(build_model({"architecture": "digits_cnn", "seed": 1}))
    assert build_model({"architecture": "mnist_tutorial", "input_shape": [1, 28, 28]}).input_shape == (
        1,
        28,
        28,
    )
    with pytest.raises(
        ModelError, match=r"model architecture 'resnet': unknown architecture; expected one of"
    ):
        build_model({"architecture": "resnet"})


def test_weights_file(tmp_path):
    source = build_model({"architecture": "digits_cnn", "seed": 7})
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model({"architecture": "digits_cnn", "weights": "w.pt"}, base_dir=tmp_path)
    assert model_checksum(model) == model_checksum(source)


def test_weight_mismatches_are_named(tmp_path):
    state = DigitsCNN().state_dict()
    del state["fc.bias"]
    state["head.weight"] = torch.zeros(1)
    state["conv2.weight"] = torch.zeros(16, 8, 5, 5)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelError) as raised:
        build_model({"architecture": "digits_cnn", "weights": "w.pt"}, base_dir=tmp_path)
    message = str(raised.value)
    assert "w.pt does not fit DigitsCNN" in message
    assert "missing keys ['fc.bias']" in message and "unexpected keys ['head.weight']" in message
    assert "conv2.weight: file (16, 8, 5, 5), model (16, 8, 3, 3)" in message


def test_bad_weight_files(tmp_path):
    entry = {"architecture": "digits_cnn", "weights": "w.pt"}
    with pytest.raises(ModelError, match=r"'weights' file .*w.pt does not exist"):
        build_model(entry, base_dir=tmp_path)
    torch.save(DigitsCNN(), tmp_path / "w.pt")
    with pytest.raises(
        ModelError, match=r"w.pt cannot be loaded as a state_dict.*'pickle' entry with 'trusted: true'"
    ):
        build_model(entry, base_dir=tmp_path)
    (tmp_path / "w.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"w.pt cannot be loaded as a state_dict"):
        build_model(entry, base_dir=tmp_path)
    torch.save([torch.zeros(1)], tmp_path / "w.pt")
    with pytest.raises(ModelError, match=r"weights .*w.pt is a list; expected a state_dict of tensors"):
        build_model(entry, base_dir=tmp_path)


def test_user_module(tmp_path, user_module):
    model = build_model(user_module, base_dir=tmp_path)
    assert type(model).__name__ == "TinyNet" and model.fc1.out_features == 5 and not model.training
    assert model.input_shape == (4,)
    weights = {key: torch.full_like(value, 0.5) for key, value in model.state_dict().items()}
    torch.save(weights, tmp_path / "tiny.pt")
    loaded = build_model({**user_module, "weights": "tiny.pt", "input_shape": [4]}, base_dir=tmp_path)
    assert torch.equal(loaded.fc2.bias, torch.full((2,), 0.5))


def test_user_module_errors(tmp_path, user_module):
    with pytest.raises(ModelError, match=r"has no nn.Module class 'Tiny'; it defines \['TinyNet'\]"):
        build_model({**user_module, "class": "Tiny"}, base_dir=tmp_path)
    with pytest.raises(ModelError, match=r"TinyNet\(\*\*\{'width': 2\}\) failed"):
        build_model({**user_module, "kwargs": {"width": 2}}, base_dir=tmp_path)
    with pytest.raises(ModelError, match=r"'class' is missing"):
        build_model({"module": "nets/tiny.py"}, base_dir=tmp_path)
    with pytest.raises(ModelError, match=r"'module' file .*other.py does not exist"):
        build_model({**user_module, "module": "other.py"}, base_dir=tmp_path)
    (tmp_path / "broken.py").write_text("import no_such_package_here\n")
    with pytest.raises(ModelError, match=r"importing .*broken.py failed \(ModuleNotFoundError"):
        build_model({**user_module, "module": "broken.py"}, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "expected exactly one of the keys"),
        ({"architecture": "digits_cnn", "pickle": "m.pt"}, "expected exactly one of the keys"),
        ({"architecture": "digits_cnn", "class": "X"}, r"keys \['class'\] do not apply to 'architecture'"),
        ({"module": "m.py", "class": "X", "train": True}, r"keys \['train'\] do not apply to 'module'"),
        ({"pickle": "m.pt", "seed": 1}, r"keys \['seed'\] do not apply to 'pickle'"),
        ({"architecture": "digits_cnn", "seed": "0"}, "'seed' is '0'; expected an integer"),
        ({"architecture": "digits_cnn", "kwargs": [1]}, "'kwargs' is \\[1\\]; expected a mapping"),
        ({"architecture": "digits_cnn", "input_shape": [1, 0]}, "input_shape is \\[1, 0\\]"),
    ],
)
def test_malformed_entries(entry, message):
    with pytest.raises(ModelError, match=message):
        build_model(entry)


def test_pickle_needs_trust(tmp_path):
    pickled = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    torch.save(pickled, tmp_path / "m.pt")
    for entry in ({"pickle": "m.pt"}, {"pickle": "m.pt", "trusted": "yes"}):
        with pytest.raises(ModelError, match=r"unpickling runs whatever code.*add 'trusted: true'"):
            build_model(entry, base_dir=tmp_path)
    model = build_model({"pickle": "m.pt", "trusted": True}, base_dir=tmp_path)
    assert torch.equal(model[0].weight, pickled[0].weight) and not model.training
    torch.save(pickled.state_dict(), tmp_path / "state.pt")
    with pytest.raises(ModelError, match=r"holds a OrderedDict, not an nn.Module"):
        build_model({"pickle": "state.pt", "trusted": True}, base_dir=tmp_path)


# export and load


def test_artifact_round_trip(trained, digits):
    path, metadata, _ = trained
    artifact = torch.load(path, weights_only=True)
    assert artifact["format"] == "nsp-pipeline/model" and artifact["version"] == 1
    assert artifact["entry"] == {"architecture": "digits_cnn", "train": True}
    assert artifact["input_shape"] == [1, 8, 8] and artifact["n_parameters"] == 1898
    assert "seconds" not in artifact["training"]
    assert {key: value for key, value in artifact.items() if key not in ("state_dict", "training")} == {
        key: value for key, value in metadata.items() if key != "training"
    }
    assert json.loads(json.dumps(metadata)) == metadata
    model, loaded = load_model(path)
    assert loaded == {key: value for key, value in artifact.items() if key != "state_dict"}
    assert (
        not model.training
        and model.input_shape == (1, 8, 8)
        and model_checksum(model) == metadata["checksum"]
    )
    reference = build_model({"architecture": "digits_cnn"})
    reference.load_state_dict(artifact["state_dict"])
    inputs = digits[1].inputs
    assert torch.equal(model(inputs), reference(inputs))
    assert accuracy(model, digits[1]) == metadata["accuracy"]


def test_export_is_bit_identical(tmp_path, digits):
    entry = {"architecture": "digits_cnn", "seed": 2, "train": {"epochs": 1}}
    first = export_model(entry, tmp_path / "a" / "m.pt", train_data=digits[0], test_data=digits[1])
    second = export_model(entry, tmp_path / "b" / "m.pt", train_data=digits[0], test_data=digits[1])
    assert (tmp_path / "a" / "m.pt").read_bytes() == (tmp_path / "b" / "m.pt").read_bytes()
    assert (
        first["training"]["epochs"] == 1 and first["training"]["batch_size"] == DEFAULT_TRAINING["batch_size"]
    )
    assert first["checksum"] == second["checksum"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["m.pt"]


def test_export_and_load_user_module_and_pickle(tmp_path, user_module):
    metadata = export_model(user_module, tmp_path / "out" / "tiny.pt", base_dir=tmp_path)
    assert metadata["source_dir"] == ".." and metadata["accuracy"] is None and metadata["training"] is None
    model, _ = load_model(tmp_path / "out" / "tiny.pt")
    assert torch.equal(model(torch.ones(1, 4)), build_model(user_module, base_dir=tmp_path)(torch.ones(1, 4)))
    torch.save(nn.Sequential(nn.Linear(3, 2)), tmp_path / "m.pt")
    with pytest.raises(
        ModelError, match=r"model pickle 'm.pt': the model has no input_shape; add 'input_shape"
    ):
        export_model({"pickle": "m.pt", "trusted": True}, tmp_path / "p.pt", base_dir=tmp_path)
    export_model(
        {"pickle": "m.pt", "trusted": True, "input_shape": [3]}, tmp_path / "p.pt", base_dir=tmp_path
    )
    model, metadata = load_model(tmp_path / "p.pt")
    assert model.input_shape == (3,) and metadata["n_parameters"] == 8


def test_export_errors(tmp_path, digits):
    with pytest.raises(ModelError, match="has 'train' but no training data was given"):
        export_model({"architecture": "digits_cnn", "train": True}, tmp_path / "m.pt")
    with pytest.raises(ModelError, match=r"'train' is \{'epoch': 3\}; expected true or a mapping with keys"):
        export_model(
            {"architecture": "digits_cnn", "train": {"epoch": 3}}, tmp_path / "m.pt", train_data=digits[0]
        )
    with pytest.raises(ModelError, match=r"rejects inputs of shape \(1, 28, 28\)"):
        export_model({"architecture": "digits_cnn", "input_shape": [1, 28, 28]}, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_corrupted_artifacts_are_detected(trained, tmp_path):
    path, _, _ = trained
    artifact = torch.load(path, weights_only=True)
    torch.save({**artifact, "checksum": "0" * 64}, tmp_path / "checksum.pt")
    with pytest.raises(
        ModelError, match=r"checksum.pt: the weights' checksum [0-9a-f]{64} differs from the stored 0+;"
    ):
        load_model(tmp_path / "checksum.pt")
    state = dict(artifact["state_dict"])
    state["fc.bias"] = state["fc.bias"] + 1
    torch.save({**artifact, "state_dict": state}, tmp_path / "weights.pt")
    with pytest.raises(ModelError, match=r"weights.pt: the weights' checksum"):
        load_model(tmp_path / "weights.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match=r"other.pt is not a model artifact"):
        load_model(tmp_path / "other.pt")
    torch.save({**artifact, "version": 2}, tmp_path / "version.pt")
    with pytest.raises(ModelError, match=r"version.pt has artifact version 2; expected 1"):
        load_model(tmp_path / "version.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"cut.pt cannot be loaded as a model artifact"):
        load_model(tmp_path / "cut.pt")
    with pytest.raises(ModelError, match=r"missing.pt does not exist"):
        load_model(tmp_path / "missing.pt")
