"""One configuration schema for the workflow, the command line and the library.

- The defaults filled in are the schema's ``default:`` values, read here straight from the YAML
  file, and the same as ``snakemake.utils.validate`` fills in (an independent implementation).
- A bad config (unknown key, wrong type, unknown model in ``analyses``, unknown colormap, a key
  given twice, ...) raises :class:`ConfigError` naming the file and the key, and the command line
  (in-process and as ``python -m nsp_pipeline``) and ``snakemake`` stop with the same message.
- The defaults of ``render_pattern``, ``analyze``, the transforms, training, the command line and
  the workflow are all the schema's.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import error_line, run

from nsp_pipeline.core.defaults import SCHEMA_PATH, default
from nsp_pipeline.io.config import ConfigError, load_config, read_yaml, validate_config
from nsp_pipeline.pipeline import cli

REPO = Path(__file__).resolve().parents[1]

#: The schema as a plain YAML document: the oracle of every default.
RAW = yaml.safe_load(SCHEMA_PATH.read_text())

BASE = {
    "models": {"tiny": {"architecture": "digits_cnn"}},
    "datasets": {"digits": {"source": "digits", "split": "test"}},
    "analyses": [{"model": "tiny", "dataset": "digits"}],
    "samples": {"count": 2},
}


def raw_node(node: dict) -> dict:
    """A node of RAW with its ``$ref`` to ``#/$defs/<name>`` followed."""
    if "$ref" in node:
        return {**RAW["$defs"][node["$ref"].rsplit("/", 1)[1]], **node}
    return node


def leaf_defaults(node: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(key path, default) of every setting under ``node`` whose default is not a mapping."""
    found = []
    for key, child in raw_node(node).get("properties", {}).items():
        child = raw_node(child)
        path = f"{prefix}{key}"
        if "default" in child and not isinstance(child["default"], dict):
            found.append((path, child["default"]))
        found += leaf_defaults(child, f"{path}.")
    return found


def at(config: dict, path: str):
    for key in path.split("."):
        config = config[key]
    return config


def with_(**sections) -> dict:
    """BASE with top-level sections replaced."""
    return copy.deepcopy(BASE) | sections


# --------------------------------------------------------------------------- defaults


TOP_DEFAULTS = leaf_defaults(RAW)
TRAINING_DEFAULTS = leaf_defaults(RAW["$defs"]["training"])


def test_the_oracle_sees_every_section():
    paths = {path for path, _ in TOP_DEFAULTS}
    assert {"render.scale", "render.cmap", "render.symlog", "graph.granularity", "laplacian.k"} <= paths
    assert {"batching.samples_per_job", "transforms", "laplacian.max_nodes"} <= paths
    assert [path for path, _ in TRAINING_DEFAULTS] == ["epochs", "learning_rate", "batch_size", "seed"]


@pytest.mark.parametrize(("path", "expected"), TOP_DEFAULTS)
def test_filled_defaults_are_the_schemas(path, expected):
    # the references have no default of their own: their index is filled in where they are given
    config = BASE
    for section in ("graph", "graph_analytics"):
        if path.startswith(f"{section}.reference"):
            config = with_(**{section: {"reference": {"dataset": "digits"}}})
    assert at(validate_config(config), path) == expected
    assert default(path) == expected


@pytest.mark.parametrize(("key", "expected"), TRAINING_DEFAULTS)
def test_training_defaults_are_the_schemas(key, expected):
    from nsp_pipeline.model.training import DEFAULT_TRAINING, train_classifier

    model = {"architecture": "digits_cnn", "train": {}, "train_data": "digits"}
    config = validate_config(with_(models={"tiny": model}))
    assert config["models"]["tiny"]["train"][key] == expected
    assert default(f"models.*.train.{key}") == DEFAULT_TRAINING[key] == expected
    assert inspect.signature(train_classifier).parameters[key].default == expected


@pytest.mark.parametrize(
    "config",
    [
        BASE,
        with_(render={"cmap": "viridis"}, graph={"incl": False, "reference": {"dataset": "digits"}}),
        with_(
            models={"tiny": {"architecture": "digits_cnn", "train": {"epochs": 3}, "train_data": "digits"}}
        ),
        read_yaml(REPO / "config.yaml"),
        read_yaml(REPO / "workflow" / "configs" / "sweep.yaml"),
    ],
    ids=["minimal", "partial sections", "partial training", "config.yaml", "sweep.yaml"],
)
def test_filling_equals_snakemakes(config):
    from snakemake.utils import validate

    expected = copy.deepcopy(config)
    validate(expected, schema=str(SCHEMA_PATH))  # fills in place
    before = copy.deepcopy(config)
    assert validate_config(config) == expected
    assert config == before  # the argument is left alone


def test_default_of_unknown_or_defaultless_settings():
    with pytest.raises(KeyError, match=r"render has no setting 'cmapp'; it has \['cmap',"):
        default("render.cmapp")
    with pytest.raises(KeyError, match=r"render\.samples has no default"):
        default("render.samples")


def test_schema_enums_are_the_codes_names():
    from nsp_pipeline.core.layout import GRANULARITIES
    from nsp_pipeline.model.architectures import ARCHITECTURES
    from nsp_pipeline.render.pages import SCALES
    from nsp_pipeline.transforms.api import TRANSFORM_TYPES

    props = RAW["properties"]
    assert tuple(props["render"]["properties"]["scale"]["enum"]) == SCALES
    assert tuple(props["graph"]["properties"]["granularity"]["enum"]) == tuple(GRANULARITIES)
    assert tuple(props["transforms"]["items"]["enum"]) == TRANSFORM_TYPES
    assert set(RAW["$defs"]["model"]["properties"]["architecture"]["enum"]) == set(ARCHITECTURES)


def test_the_schema_is_valid_json_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(RAW)


@pytest.fixture(scope="module")
def workflow_config(tmp_path_factory) -> dict:
    """The config the workflow's rules see: BASE after workflow/rules/common.smk."""
    folder = tmp_path_factory.mktemp("workflow_config")
    (folder / "config.yaml").write_text(yaml.safe_dump(BASE))
    (folder / "Snakefile").write_text(
        f'import json\n\n\ninclude: "{REPO / "workflow" / "rules" / "common.smk"}"\n\n'
        'print("CONFIG", json.dumps(config))\n\n\n'
        "rule all:\n    input: []\n"
    )
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(folder / "Snakefile"),
        "--directory", str(folder), "--configfile", str(folder / "config.yaml"), "--dry-run", "--quiet",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=folder, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("CONFIG "))
    return json.loads(line.removeprefix("CONFIG "))


@pytest.mark.workflow
def test_library_cli_and_workflow_defaults_agree(workflow_config):
    from nsp_pipeline.analysis.analyze import analyze
    from nsp_pipeline.render.pages import page_figures, render_pattern
    from nsp_pipeline.transforms.api import compute_operator
    from nsp_pipeline.transforms.laplacian import laplacian_operator

    (subparsers,) = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    stages = subparsers.choices
    for key in ("scale", "cmap", "symlog"):
        value = default(f"render.{key}")
        assert workflow_config["render"][key] == value == stages["render"].get_default(key)
        for function in (render_pattern, page_figures):
            assert inspect.signature(function).parameters[key].default == value
    graph, extract = stages["build-graph"], stages["extract-activations"]
    granularity = default("graph.granularity")
    assert workflow_config["graph"]["granularity"] == granularity == graph.get_default("granularity")
    assert extract.get_default("granularity") == granularity
    assert inspect.signature(analyze).parameters["granularity"].default == granularity
    assert (
        workflow_config["graph"]["incl"]
        == default("graph.incl")
        == (not graph.get_default("exclude_zero_edges"))
    )
    assert graph.get_default("index") == default("graph.reference.index")
    for key in ("max_nodes", "k"):
        value = default(f"laplacian.{key}")
        assert workflow_config["laplacian"][key] == value == stages["compute-operator"].get_default(key)
        for function in (analyze, compute_operator, laplacian_operator):
            assert inspect.signature(function).parameters[key].default == value
    assert workflow_config == validate_config(BASE)


# --------------------------------------------------------------------------- bad configs

DUPLICATE = """\
models:
  tiny: {architecture: digits_cnn}
datasets:
  digits: {source: digits}
samples: {count: 2}
analyses: [{model: tiny, dataset: digits}]
samples: {count: 3}
"""

#: (id, the config (a mapping, or YAML text), key path, fragment of what was expected).
BAD = [
    ("unknown key", with_(sampels={"count": 3}), "sampels", "unknown key; expected one of ['analyses',"),
    ("unknown nested key", with_(render={"cmapp": "viridis"}), "render.cmapp", "(did you mean 'cmap'?)"),
    (
        "wrong type",
        with_(batching={"samples_per_job": "many"}),
        "batching.samples_per_job",
        "'many' is not of type 'integer'",
    ),
    (
        "unknown model in analyses",
        with_(analyses=[{"model": "tiyn", "dataset": "digits"}]),
        "analyses[0].model",
        "'tiyn' is not one of the models ['tiny']",
    ),
    (
        "unknown dataset in a sweep",
        with_(analyses=[{"model": "tiny", "dataset": ["digits", "digts"]}]),
        "analyses[0].dataset",
        "'digts' is not one of the datasets ['digits']",
    ),
    ("bad cmap", with_(render={"cmap": "not_a_cmap"}), "render.cmap", "is not a matplotlib colormap"),
    (
        "bad scale",
        with_(render={"scale": "rainbow"}),
        "render.scale",
        "'rainbow' is not one of ['layerscale',",
    ),
    ("missing section", {key: BASE[key] for key in ("models", "datasets")}, "analyses", "missing"),
    (
        "two model sources",
        with_(models={"tiny": {"architecture": "digits_cnn", "pickle": "m.pt", "trusted": True}}),
        "models.tiny",
        "expected exactly one of: architecture; module and class; pickle",
    ),
    (
        "pickle without trusted",
        with_(models={"tiny": {"pickle": "m.pt"}}),
        "models.tiny",
        "a pickled model (m.pt) without 'trusted: true'",
    ),
    (
        "train without train_data",
        with_(models={"tiny": {"architecture": "digits_cnn", "train": {}}}),
        "models.tiny.train_data",
        "missing; 'train' needs one of the datasets ['digits']",
    ),
    (
        "incl false without reference",
        with_(graph={"incl": False}),
        "graph.reference.dataset",
        "graph.incl false needs a reference sample",
    ),
    (
        "name leaving results/",
        with_(datasets={"../x": {"source": "digits"}}),
        "datasets",
        "entry name '../x'",
    ),
    (
        "duplicate key",
        DUPLICATE,
        None,
        "line 7: key 'samples' appears a second time in one mapping (first on line 5)",
    ),
]
IDS = [case[0] for case in BAD]
#: The cases also given to snakemake (each run takes a few seconds).
WORKFLOW_CASES = ["unknown key", "wrong type", "unknown model in analyses", "bad cmap", "duplicate key"]


def write(folder: Path, config: dict | str) -> Path:
    path = folder / "bad.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    return path


def expected_message(path: Path, key: str | None, fragment: str) -> str:
    """The library's message, checked to name the file, the key path and what was expected."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: " if key else f"{path}, "), message
    assert fragment in message and "\n" not in message
    return message


@pytest.mark.parametrize(("case", "config", "key", "fragment"), BAD, ids=IDS)
def test_bad_config_fails_in_library_and_cli_alike(tmp_path, capsys, case, config, key, fragment):
    path = write(tmp_path, config)
    message = expected_message(path, key, fragment)
    out = tmp_path / "m.pt"
    argv = (
        "export-model",
        "--config",
        path,
        "--model",
        "tiny",
        "--out",
        out,
        "--metadata",
        tmp_path / "m.json",
    )
    assert run(*argv) == 1
    assert error_line(capsys) == f"error: {message}"
    assert not out.exists()


def test_bad_config_fails_python_m(tmp_path):
    """``python -m nsp_pipeline``: exit status 1 and the library's message on stderr."""
    path = write(tmp_path, with_(render={"cmap": "not_a_cmap"}))
    message = expected_message(path, "render.cmap", "is not a matplotlib colormap")
    argv = ["export-model", "--config", str(path), "--model", "tiny", "--out", "m.pt", "--metadata", "m.json"]
    result = subprocess.run(
        [sys.executable, "-m", "nsp_pipeline", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr == f"error: {message}\n"


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("case", "config", "key", "fragment"),
    [case for case in BAD if case[0] in WORKFLOW_CASES],
    ids=WORKFLOW_CASES,
)
def test_bad_config_stops_snakemake_with_the_same_message(tmp_path, case, config, key, fragment):
    path = write(tmp_path, config)
    message = expected_message(path, key, fragment)
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(tmp_path), "--configfile", str(path), "--dry-run",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 1
    assert message in (result.stdout + result.stderr).splitlines(), result.stderr[-3000:]
    assert not (tmp_path / "results").exists()


def test_message_names_the_file_that_sets_the_key(tmp_path):
    """Merged files (Snakemake's configfile: and --configfile): the one holding the bad value is named."""
    base, overlay = tmp_path / "config.yaml", tmp_path / "overlay.yaml"
    base.write_text(yaml.safe_dump(BASE))
    overlay.write_text(yaml.safe_dump({"render": {"cmap": "not_a_cmap"}}))
    merged = with_(render={"cmap": "not_a_cmap"})
    with pytest.raises(ConfigError, match=rf"^{overlay}: render\.cmap: 'not_a_cmap' is not a matplotlib"):
        validate_config(merged, files=[base, overlay])
    with pytest.raises(ConfigError, match=rf"^{base}: analyses\[0\]\.model: 'tiyn' is not one of the models"):
        validate_config(with_(analyses=[{"model": "tiyn", "dataset": "digits"}]), files=[base, overlay])
    with pytest.raises(ConfigError, match=r"^config: render\.cmap: "):
        validate_config(merged)


def test_duplicate_keys_in_nested_mappings_and_merge_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("render:\n  cmap: viridis\n  scale: layernorm\n  cmap: magma\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{path}, line 4: key 'cmap' appears a second time in one mapping \(first on line 2\)",
    ):
        read_yaml(path)
    path.write_text("base: &base {cmap: viridis}\nrender:\n  <<: *base\n  cmap: magma\n")
    assert read_yaml(path)["render"] == {"cmap": "magma"}  # a merge key may be overridden


def test_unreadable_config_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nowhere.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    (tmp_path / "list.yaml").write_text("- models\n")
    with pytest.raises(ConfigError, match="holds list; expected a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "tag.yaml").write_text("models: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(tmp_path / "tag.yaml")


def test_validation_never_imports_torch():
    code = (
        "import sys; from nsp_pipeline.io.config import load_config; "
        f"load_config({str(REPO / 'config.yaml')!r}); assert 'torch' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=300).returncode == 0
