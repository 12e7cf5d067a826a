"""Models from config entries, and the self-contained model artifact the workflow passes on.

A model entry is a mapping with exactly one of these keys:

``architecture``
    A built-in architecture (:data:`~nsp_pipeline.model.architectures.ARCHITECTURES`), randomly
    initialised with ``seed`` (default 0), or with ``weights``; ``train`` trains it on export.
``module`` and ``class``
    A class in a Python file, built with ``kwargs`` and ``seed``, loaded with ``weights``
    (a ``state_dict`` saved with ``torch.save``).
``pickle``
    A whole module saved with ``torch.save(model)``. Unpickling runs code from the file, so
    the entry must say ``trusted: true``.

``input_shape`` (per sample, e.g. ``[1, 8, 8]``) overrides the class attribute of that name.
Relative paths are relative to ``base_dir``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import os
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from nsp_pipeline.core.atomic import atomic_output
from nsp_pipeline.core.errors import TraceError, shortened
from nsp_pipeline.data.loading import Dataset
from nsp_pipeline.model.architectures import ARCHITECTURES
from nsp_pipeline.model.records import check_output
from nsp_pipeline.model.training import DEFAULT_TRAINING, accuracy, train_classifier

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "nsp-pipeline/model"
ARTIFACT_VERSION = 1
KINDS = ("architecture", "module", "pickle")
_ONLY_FOR = {"class": "module", "trusted": "pickle", "train": "architecture"}
_NOT_FOR_PICKLE = ("kwargs", "seed")
_ARTIFACT_KEYS = ("entry", "source_dir", "input_shape", "state_dict", "checksum")
_TORCH_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError)


class ModelError(ValueError):
    """A model entry, weights file or model artifact that cannot be used as it is."""


def model_checksum(model: nn.Module | Mapping[str, torch.Tensor] | None) -> str:
    """SHA-256 of a model's weights and buffers, recorded in artifacts and in file provenance.

    For every ``state_dict`` entry in key order, the digest covers
    ``"{key}\\0{dtype}\\0{comma-separated shape}\\0"`` (UTF-8) followed by the tensor's raw
    bytes in C order, taken on the CPU.

    Parameters
    ----------
    model : torch.nn.Module, mapping of str to torch.Tensor, or None
        The model, or its state dict.

    Returns
    -------
    str
        Hex digest, or ``""`` if ``model`` is None.

    Raises
    ------
    TypeError
        If a state dict entry is not a tensor.
    """
    if model is None:
        return ""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    digest = hashlib.sha256()
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().cpu().contiguous()
        shape = ",".join(str(size) for size in tensor.shape)
        digest.update(f"{key}\0{tensor.dtype}\0{shape}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def build_model(entry: Mapping, base_dir: str | os.PathLike = ".") -> nn.Module:
    """Build the model a config entry describes.

    Parameters
    ----------
    entry : mapping
        Model entry (see the module docstring).
    base_dir : str or os.PathLike
        Folder that relative paths in the entry start from.

    Returns
    -------
    nn.Module
        The model in eval mode; ``model.input_shape`` is the entry's if it has one.

    Raises
    ------
    ModelError
        Malformed entry, unknown architecture, missing or unimportable file, missing class,
        untrusted pickle, weights that do not fit the model (naming every missing,
        unexpected and mis-shaped key), or parameters or buffers holding NaN or Inf.
    """
    kind = _kind(entry)
    label = _label(entry)
    base = Path(base_dir)
    seed = entry.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ModelError(f"{label}: 'seed' is {seed!r}; expected an integer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "architecture":
            name = entry["architecture"]
            if name not in ARCHITECTURES:
                raise ModelError(f"{label}: unknown architecture; expected one of {sorted(ARCHITECTURES)}")
            model = _construct(ARCHITECTURES[name], entry, label)
        elif kind == "module":
            model = _construct(
                _import_class(_file(base, entry, "module"), entry["class"], label), entry, label
            )
        else:
            model = _unpickle(_file(base, entry, "pickle"), entry, label)
    source = label
    if "weights" in entry:
        path = _file(base, entry, "weights")
        source = f"{label}, weights {path}"
        _assign(model, _torch_load(path, "a state_dict"), f"weights {path}")
    _check_finite(model, source, "fix or replace the weights")
    if "input_shape" in entry:
        model.input_shape = _shape(entry["input_shape"], label)
    return model.eval()


def export_model(
    entry: Mapping,
    path: str | os.PathLike,
    base_dir: str | os.PathLike = ".",
    train_data: Dataset | None = None,
    test_data: Dataset | None = None,
) -> dict:
    """Build (and train) a model and save it as a self-contained artifact.

    The artifact is a ``torch.save`` file that loads with ``weights_only=True``: a dict with
    ``format``, ``version``, ``entry`` (as :func:`load_model` compares it with a config's),
    ``source_dir`` (``base_dir`` relative to the artifact's folder), ``input_shape``,
    ``output_shape`` (per sample, on zeros), ``state_dict``, ``checksum``
    (:func:`model_checksum`), ``architecture`` (``str(model)``), ``n_parameters``,
    ``accuracy`` and ``training``. Nothing time-dependent is stored, so the same entry and data
    give a bit-identical file; it is written atomically.

    What the model returns is checked first (:func:`~nsp_pipeline.model.records.check_output`):
    anything but one tensor with a batch axis is refused; a tensor that is not
    ``(batch, classes)`` scores gives a warning, and no ``accuracy``.

    Parameters
    ----------
    entry : mapping
        Model entry; with ``train: {epochs, learning_rate, batch_size, seed}`` (missing keys
        from :data:`~nsp_pipeline.model.training.DEFAULT_TRAINING`, ``train: true`` for all of
        them) a built-in architecture is trained on ``train_data`` first.
    path : str or os.PathLike
        Artifact file to write.
    base_dir : str or os.PathLike
        Folder that relative paths in the entry start from.
    train_data, test_data : Dataset, optional
        Training samples (needed with ``train``), and samples whose accuracy is recorded.

    Returns
    -------
    dict
        The artifact without ``state_dict``, for a JSON sidecar; its ``training`` metrics
        also hold the training time in ``seconds``.

    Raises
    ------
    ModelError
        As :func:`build_model`; also a ``train`` entry without training data, a bad recipe,
        no known input shape, a model that rejects inputs of its input shape or returns
        something else than one tensor with a batch axis, or training that ends with NaN or Inf
        weights.
    """
    model = build_model(entry, base_dir)
    label = _label(entry)
    input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        raise ModelError(f"{label}: the model has no input_shape; add 'input_shape: [C, H, W]' to the entry")
    input_shape = _shape(input_shape, label)
    output, no_predictions = _probe(model, input_shape, label)
    if no_predictions is not None:
        log.warning("%s %s: its samples get no predictions (-1) and no accuracy", label, no_predictions)
    training = None
    if "train" in entry:
        if train_data is None:
            raise ModelError(f"{label} has 'train' but no training data was given")
        try:
            training = train_classifier(model, train_data, test_data, **_recipe(entry["train"], label))
        except ValueError as error:
            raise ModelError(f"{label}: {error}") from error
        _check_finite(model, f"{label}, trained", "training diverged: lower train.learning_rate")
    artifact = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "entry": _normalised(entry),
        "source_dir": os.path.relpath(Path(base_dir).resolve(), Path(path).resolve().parent),
        "input_shape": list(input_shape),
        "output_shape": list(output.shape[1:]),
        "state_dict": model.state_dict(),
        "checksum": model_checksum(model),
        "architecture": str(model),
        "n_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "accuracy": accuracy(model, test_data) if test_data is not None and no_predictions is None else None,
        "training": None if training is None else {k: v for k, v in training.items() if k != "seconds"},
    }
    buffer = io.BytesIO()
    torch.save(artifact, buffer)
    with atomic_output(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return {key: value for key, value in artifact.items() if key != "state_dict"} | {"training": training}


def load_model(
    path: str | os.PathLike, entry: Mapping | None = None, metadata_path: str | os.PathLike | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild the model of an artifact written by :func:`export_model`.

    Parameters
    ----------
    path : str or os.PathLike
        Artifact file.
    entry : mapping, optional
        The config entry the artifact must have been exported from (compared as JSON values,
        so key order does not matter).
    metadata_path : str or os.PathLike, optional
        The JSON metadata written with the artifact, whose ``checksum`` must be the artifact's.

    Returns
    -------
    model : nn.Module
        The model in eval mode, with its weights verified and ``model.input_shape`` set.
    metadata : dict
        The artifact without ``state_dict``.

    Raises
    ------
    ModelError
        If the file is missing, unreadable, not an artifact of this version, its model cannot
        be rebuilt, its weights do not match the stored checksum or hold NaN or Inf, or it does
        not belong to ``entry`` or to ``metadata_path``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model artifact {path} does not exist")
    artifact = _torch_load(path, "a model artifact")
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise ModelError(f"{path} is not a model artifact; expected a file written by export_model")
    if artifact.get("version") != ARTIFACT_VERSION:
        raise ModelError(
            f"{path} has artifact version {artifact.get('version')!r}; expected {ARTIFACT_VERSION}"
        )
    missing = [key for key in _ARTIFACT_KEYS if key not in artifact]
    if missing:
        raise ModelError(
            f"model artifact {path} lacks {missing}; the file is corrupt, export the model again"
        )
    again = f"export the model again (snakemake --forcerun export_model, or delete {path})"
    if entry is not None and _normalised(entry) != artifact["entry"]:
        differ = sorted(
            key
            for key in _normalised(entry).keys() | artifact["entry"].keys()
            if _normalised(entry).get(key) != artifact["entry"].get(key)
        )
        raise ModelError(
            f"model artifact {path} was exported from the entry {artifact['entry']}, not from the config's "
            f"entry {_normalised(entry)} (keys {differ} differ); the file was replaced or is stale: {again}"
        )
    if metadata_path is not None:
        described = _metadata_checksum(Path(metadata_path))
        if described != artifact["checksum"]:
            raise ModelError(
                f"{metadata_path} describes the model with checksum {described[:12]}..., but {path} holds "
                f"{artifact['checksum'][:12]}...; one of them was replaced: {again}"
            )
    rebuilt = {key: value for key, value in artifact["entry"].items() if key != "weights"}
    try:
        model = build_model(rebuilt, path.parent / artifact["source_dir"])
    except ModelError as error:
        raise ModelError(f"model artifact {path}: {error}") from error
    _assign(model, artifact["state_dict"], f"model artifact {path}")
    checksum = model_checksum(model)
    if checksum != artifact["checksum"]:
        raise ModelError(
            f"model artifact {path}: the weights' checksum {checksum} differs from the stored "
            f"{artifact['checksum']}; the file is corrupt or was edited, {again}"
        )
    _check_finite(model, f"model artifact {path}", again)
    model.input_shape = tuple(artifact["input_shape"])
    return model.eval(), {key: value for key, value in artifact.items() if key != "state_dict"}


def _normalised(entry: Mapping) -> dict:
    """A config entry as an artifact stores it: JSON values, so that equal entries compare equal."""
    return json.loads(json.dumps(dict(entry), default=str))


def _metadata_checksum(path: Path) -> str:
    try:
        checksum = json.loads(path.read_text()).get("checksum")
    except (OSError, ValueError, AttributeError) as error:
        raise ModelError(f"model metadata {path} is not JSON ({error}); export the model again") from error
    if not isinstance(checksum, str):
        raise ModelError(f"model metadata {path} has no 'checksum'; expected the file export_model writes")
    return checksum


def _probe(model: nn.Module, input_shape: tuple[int, ...], label: str) -> tuple[torch.Tensor, str | None]:
    """What ``model`` returns for two zero inputs (in eval mode), and why it gives no predictions (if so)."""
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *input_shape))
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise ModelError(f"{label}: the model rejects inputs of shape {input_shape} ({error})") from error
    try:
        return output, check_output(output, 2)
    except TraceError as error:
        raise ModelError(f"{label} {error}") from None


def _check_finite(model: nn.Module, source: str, advice: str) -> None:
    """Refuse parameters and buffers that hold NaN or Inf, naming them."""
    bad = [
        f"{key} ({int((~torch.isfinite(tensor)).sum())} of {tensor.numel()})"
        for key, tensor in model.state_dict().items()
        if (tensor.is_floating_point() or tensor.is_complex()) and not torch.isfinite(tensor).all()
    ]
    if bad:
        raise ModelError(
            f"{source}: parameters or buffers {shortened(bad)} hold NaN or Inf values; expected finite "
            f"weights ({advice})"
        )


def _kind(entry: Mapping) -> str:
    kinds = [kind for kind in KINDS if kind in entry]
    if len(kinds) != 1:
        raise ModelError(f"model entry {dict(entry)!r}: expected exactly one of the keys {list(KINDS)}")
    kind = kinds[0]
    label = _label(entry)
    wrong = [key for key, owner in _ONLY_FOR.items() if key in entry and owner != kind]
    wrong += [key for key in _NOT_FOR_PICKLE if key in entry and kind == "pickle"]
    if wrong:
        raise ModelError(
            f"{label}: keys {wrong} do not apply to {kind!r} entries ('class' is for 'module' entries, "
            "'trusted' for 'pickle' entries, 'train' for built-in architectures; "
            "'pickle' entries take no 'kwargs' or 'seed')"
        )
    if kind == "module" and "class" not in entry:
        raise ModelError(f"{label}: 'class' is missing; expected the name of an nn.Module class in the file")
    return kind


def _label(entry: Mapping) -> str:
    kind = next((kind for kind in KINDS if kind in entry), None)
    if kind == "module":
        return f"model module {entry['module']!r} class {entry.get('class')!r}"
    return f"model {kind} {entry[kind]!r}"


def _file(base: Path, entry: Mapping, key: str) -> Path:
    path = base / str(entry[key])
    if not path.is_file():
        raise ModelError(f"{_label(entry)}: '{key}' file {path} does not exist")
    return path


def _shape(value, label: str) -> tuple[int, ...]:
    if not (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in value)
    ):
        raise ModelError(f"{label}: input_shape is {value!r}; expected positive integers, e.g. [1, 8, 8]")
    return tuple(value)


def _construct(cls: type[nn.Module], entry: Mapping, label: str) -> nn.Module:
    kwargs = entry.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise ModelError(f"{label}: 'kwargs' is {kwargs!r}; expected a mapping of argument names to values")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ModelError(f"{label}: {cls.__name__}(**{dict(kwargs)!r}) failed ({error})") from error


def _import_class(path: Path, class_name: str, label: str) -> type[nn.Module]:
    name = "nsp_pipeline_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise ModelError(f"{label}: {path} cannot be imported; expected a Python (.py) file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ModelError(f"{label}: importing {path} failed ({type(error).__name__}: {error})") from error
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        found = sorted(
            key
            for key, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == name
        )
        raise ModelError(f"{label}: {path} has no nn.Module class {class_name!r}; it defines {found}")
    return cls


def _unpickle(path: Path, entry: Mapping, label: str) -> nn.Module:
    if entry.get("trusted") is not True:
        raise ModelError(
            f"{label}: {path} is a pickled model, and unpickling runs whatever code the file holds; "
            "add 'trusted: true' to the entry only if you made the file or trust its source "
            "(or save a state_dict and use 'module', 'class' and 'weights' instead)"
        )
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ModelError(f"{label}: unpickling {path} failed ({type(error).__name__}: {error})") from error
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"{label}: {path} holds a {type(model).__name__}, not an nn.Module; "
            "for a state_dict use 'module', 'class' and 'weights'"
        )
    return model


def _torch_load(path: Path, expected: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _TORCH_READ_ERRORS as error:
        lines = str(error).splitlines() or [type(error).__name__]
        reason = next((line.strip() for line in lines if "WeightsUnpickler error" in line), lines[0])
        reason = reason.split(" Please use `torch.serialization", 1)[0]  # not advice to follow blindly
        raise ModelError(
            f"{path} cannot be loaded as {expected} with weights_only=True ({reason}); expected tensors "
            "saved with torch.save (a pickled whole model needs a 'pickle' entry with 'trusted: true')"
        ) from error


def _assign(model: nn.Module, state, source: str) -> None:
    """Load ``state`` into ``model`` strictly, naming every key that does not fit."""
    if not (isinstance(state, Mapping) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ModelError(f"{source} is a {type(state).__name__}; expected a state_dict of tensors")
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state[key].shape)}, model {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state and state[key].shape != tensor.shape
    ]
    if missing or unexpected or mismatched:
        raise ModelError(
            f"{source} does not fit {type(model).__name__}: missing keys {missing}, "
            f"unexpected keys {unexpected}, shape mismatches {mismatched}"
        )
    model.load_state_dict(state, strict=True)


def _recipe(train, label: str) -> dict:
    recipe = {} if train is True else train
    if not isinstance(recipe, Mapping) or set(recipe) - set(DEFAULT_TRAINING):
        raise ModelError(
            f"{label}: 'train' is {train!r}; expected true or a mapping with keys {list(DEFAULT_TRAINING)}"
        )
    return DEFAULT_TRAINING | dict(recipe)
