"""Configuration files: read them, check them against the packaged schema, fill in the defaults.

One check for the workflow (``workflow/rules/common.smk``), the command line (``--config``) and
the library alike:

- :func:`load_config` reads a YAML file (:func:`read_yaml`), refusing duplicate keys (YAML would
  silently keep the last), Python tags, and files larger than :data:`MAX_CONFIG_BYTES` or whose
  aliases expand to more than :data:`MAX_CONFIG_NODES` values (a "billion laughs" file would
  otherwise hang whatever walks it), then calls :func:`validate_config`;
- :func:`validate_config` checks a mapping against the JSON schema
  (:data:`~nsp_pipeline.core.defaults.SCHEMA_PATH`, JSON Schema 2020-12), fills in its defaults
  (:func:`~nsp_pipeline.core.defaults.fill_defaults`, as ``snakemake.utils.validate`` does), and
  runs the cross-checks a schema cannot express: the model and dataset names of ``analyses``,
  ``pickle`` without ``trusted: true``, ``train`` without a known ``train_data``, the colormap,
  and the reference sample of ``graph.incl: false``. Its result is canonical: every mapping has
  its keys in sorted order, so equal configurations are equal as text too (Snakemake compares a
  rule's ``params`` by their ``repr``: reordering the keys of a file must not rerun anything).

Every problem is a :class:`ConfigError` whose one-line message names the file, the key path
(``render.cmap``, ``analyses[0].model``) and what was expected. Torch is never imported.
"""

from __future__ import annotations

import copy
import difflib
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import yaml

from nsp_pipeline.core.defaults import SCHEMA, SCHEMA_PATH, fill_defaults, resolved

__all__ = [
    "MAX_CONFIG_BYTES", "MAX_CONFIG_NODES", "SCHEMA_PATH", "ConfigError", "load_config", "read_yaml",
    "validate_config",
]  # fmt: skip

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

#: Largest configuration file read, in bytes (a long sweep's config is a few kilobytes).
MAX_CONFIG_BYTES = 1 << 20
#: Most values (mappings, lists and scalars) a configuration file may hold once every alias is
#: expanded, each alias counted at the full size of what it names.
MAX_CONFIG_NODES = 100_000


class ConfigError(ValueError):
    """A configuration that does not fit the schema or its cross-checks."""


def read_yaml(path: str | os.PathLike) -> dict:
    """The mapping a YAML configuration file holds, without validation.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ConfigError
        If it is a folder, is not YAML (Python tags included), holds something other than a
        mapping, repeats a key within one mapping (naming the key and both lines), is larger
        than :data:`MAX_CONFIG_BYTES`, nests deeper than Python's recursion limit, or expands
        to more than :data:`MAX_CONFIG_NODES` values through its aliases.
    """
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; expected a configuration "
                "of a few kilobytes (select many samples with 'range' or 'all', not a list of indices)"
            )
        stream = io.BytesIO(text)
        stream.name = str(path)  # named in PyYAML's messages
        config = yaml.load(stream, Loader=_BoundedLoader)  # a SafeLoader: no Python tags
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; expected a YAML file") from None
    except RecursionError:
        raise ConfigError(
            f"config file {path} nests its lists or mappings too deeply to be read; expected a few levels"
        ) from None
    except _TooLarge as large:
        raise ConfigError(
            f"config file {path} holds {large.args[0]} values once its aliases (*name) are expanded; "
            f"expected at most {MAX_CONFIG_NODES} (aliases of aliases multiply, as in a 'billion laughs' "
            "file): use fewer nested aliases, and 'range' or 'all' rather than long lists of indices"
        ) from None
    except _DuplicateKey as duplicate:
        key, line, first = duplicate.args
        raise ConfigError(
            f"{path}, line {line}: key {key!r} appears a second time in one mapping (first on line "
            f"{first}); YAML would keep only the last, so keep one"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} holds {type(config).__name__}; expected a mapping of keys")
    return config


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML configuration file and validate it (:func:`read_yaml`, :func:`validate_config`).

    Returns
    -------
    dict
        The configuration with every default filled in.
    """
    return validate_config(read_yaml(path), source=str(path))


def validate_config(config: Mapping, source: str = "config", files: Sequence[str | os.PathLike] = ()) -> dict:
    """Check a configuration and fill in its defaults.

    Parameters
    ----------
    config : mapping
        The configuration (left unchanged).
    source : str
        Name of the configuration in messages where ``files`` are not given.
    files : sequence of path
        The YAML files ``config`` was merged from (Snakemake's ``configfile:`` and
        ``--configfile``). Each is read again (:func:`read_yaml`, which refuses duplicate keys),
        and a message names the file that sets the offending key.

    Returns
    -------
    dict
        A new configuration: ``config`` with every default of the schema filled in, the keys of
        every mapping in sorted order (lists keep theirs).

    Raises
    ------
    ConfigError
        The first problem found, e.g. ``config.yaml: render.scale: 'rainbow' is not one of
        ['layerscale', ...]``.
    """
    sources, seen = [], set()
    for path in files:  # Snakemake may list one file twice, by two names
        if os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            sources.append((str(path), read_yaml(path)))
    filled = copy.deepcopy(dict(config))
    fill_defaults(filled)

    def fail(path: Sequence[str | int], message: str) -> ConfigError:
        return ConfigError(f"{_file_of(path, config, sources, source)}: {_key_path(path)}: {message}")

    error = next(iter(_VALIDATOR.iter_errors(filled)), None)
    if error is not None:
        raise fail(*_explained(error))
    _cross_check(filled, fail)
    return _canonical(filled)


def _canonical(value: Any) -> Any:
    """``value`` with the keys of every mapping in sorted order, recursively (lists keep theirs)."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


# --- reading -----------------------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    """A key given twice in one YAML mapping: (key, line, first line)."""


class _TooLarge(Exception):
    """A YAML document that expands, through its aliases, to more values than allowed: (count,)."""


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Number of values a YAML node graph holds once every alias is expanded (at most ``limit + 1``).

    Each node's count is computed once (iteratively, children first) and an alias adds the whole
    count of its target, so a "billion laughs" document costs time linear in its text.

    Raises
    ------
    _TooLarge
        As soon as the count passes ``limit`` (a recursive alias counts as passing it).
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        children = node.value if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > limit:
                raise _TooLarge(f"more than {limit}")
        elif id(node) not in sizes:
            if id(node) in open_nodes:
                raise _TooLarge("infinitely many (an alias inside the value it names)")
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping and oversized documents.

    A document is refused before any Python object is built when its aliases expand it to
    more than :data:`MAX_CONFIG_NODES` values (:func:`_expanded_size`).
    """

    def construct_document(self, node: yaml.Node):
        _expanded_size(node, MAX_CONFIG_NODES)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # unhashable: the base class reports it
            line = key_node.start_mark.line + 1
            if key in lines:
                raise _DuplicateKey(key, line, lines[key])
            lines[key] = line
        return super().construct_mapping(node, deep)


# --- messages ----------------------------------------------------------------------------------------------


def _key_path(path: Sequence[str | int]) -> str:
    """``render.cmap``, ``analyses[0].model``; ``(top level)`` for the empty path."""
    text = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".")
    return text or "(top level)"


def _lookup(mapping: Any, path: Sequence[str | int]) -> tuple[bool, Any]:
    for key in path:
        try:
            mapping = mapping[key]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, mapping


def _file_of(path: Sequence[str | int], config: Mapping, sources: list, fallback: str) -> str:
    """The file(s) that set the value at ``path`` (or the deepest part of it any file sets)."""
    if not sources:
        return fallback
    found, value = _lookup(config, path)
    holders = [name for name, data in sources if found and _lookup(data, path) == (True, value)]
    for depth in range(len(path), 0, -1):
        if holders:
            break
        holders = [name for name, data in sources if _lookup(data, path[:depth])[0]]
    return ", ".join(holders or [name for name, _ in sources])


def _explained(error: jsonschema.ValidationError) -> tuple[list, str]:
    """The key path of a schema error and what was expected there."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = min(set(error.instance) - set(allowed), key=str)
        close = difflib.get_close_matches(str(unknown), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [*path, unknown], f"unknown key; expected one of {allowed}{hint}"
    if error.validator == "required":
        missing = next(key for key in error.validator_value if key not in error.instance)
        return [*path, missing], "missing; a required key"
    if error.validator == "maxProperties" and error.schema.get("properties"):
        keys = ", ".join(error.schema["properties"])
        return path, f"{error.message}; expected at most {error.validator_value} of {keys}"
    if "propertyNames" in error.schema_path:
        return path, f"entry name {error.message}"
    if error.validator == "oneOf":
        options = "; ".join(_expected(option) for option in error.validator_value)
        count = "none" if error.context else "more than one"
        return path, f"matches {count} of the choices; expected exactly one of: {options}"
    return path, error.message


def _expected(option: Mapping) -> str:
    """A choice of a ``oneOf``, in words: its required keys or its type."""
    option = resolved(option)
    if "required" in option:
        return " and ".join(option["required"])
    if option.get("type") == "array":
        return f"a list of {option['items']['type']}s"
    return f"a {option.get('type', 'value')}"


def _cross_check(config: dict, fail) -> None:
    """Checks a schema cannot express, with messages that name the key to fix."""
    for index, analysis in enumerate(config["analyses"]):
        for key, section in (("model", "models"), ("dataset", "datasets")):
            names = analysis[key] if isinstance(analysis[key], list) else [analysis[key]]
            for name in names:
                if name not in config[section]:
                    known = sorted(config[section])
                    raise fail(["analyses", index, key], f"{name!r} is not one of the {section} {known}")
    for name, entry in config["models"].items():
        if "pickle" in entry and entry.get("trusted") is not True:
            raise fail(
                ["models", name],
                f"a pickled model ({entry['pickle']}) without 'trusted: true'; unpickling runs whatever "
                "code the file holds, so add 'trusted: true' only if you made the file or trust its "
                "source (or save a state_dict and use 'module', 'class' and 'weights')",
            )
        if "train" in entry and entry.get("train_data") not in config["datasets"]:
            known = sorted(config["datasets"])
            problem = _absent_or_unknown(entry.get("train_data"))
            raise fail(
                ["models", name, "train_data"], f"{problem}; 'train' needs one of the datasets {known}"
            )
    from matplotlib import colormaps  # imported only here: a second or so

    if config["render"]["cmap"] not in colormaps:
        raise fail(
            ["render", "cmap"],
            f"{config['render']['cmap']!r} is not a matplotlib colormap (e.g. viridis, magma, RdBu_r)",
        )
    graph = config["graph"]
    reference = graph.get("reference", {}).get("dataset")
    if not graph["incl"] and reference not in config["datasets"]:
        raise fail(
            ["graph", "reference", "dataset"],
            f"{_absent_or_unknown(reference)}; graph.incl false needs a reference sample "
            f"(reference: {{dataset, index}}) from one of the datasets {sorted(config['datasets'])}",
        )
    for model in config["graph_analytics"]["blocks"] or {}:
        if model not in config["models"]:
            raise fail(
                ["graph_analytics", "blocks", model],
                f"{model!r} is not one of the models {sorted(config['models'])}",
            )
    synthesis = config["interpret"]["synthesis"]
    if synthesis["enabled"] and not synthesis["layers"]:
        raise fail(
            ["interpret", "synthesis", "layers"],
            "is empty; synthesis needs the layers of its feature sheet (each channel of each is synthesised)",
        )
    candidates = synthesis["candidates"]
    if candidates is not None and candidates not in config["datasets"]:
        raise fail(
            ["interpret", "synthesis", "candidates"],
            f"{candidates!r} is not one of the datasets {sorted(config['datasets'])}",
        )
    for index, spec in enumerate(config["regions"]["slices"]):
        for key, section in (("model", "models"), ("dataset", "datasets")):
            if spec[key] not in config[section]:
                raise fail(
                    ["regions", "slices", index, key],
                    f"{spec[key]!r} is not one of the {section} {sorted(config[section])}",
                )
    chosen = config["graph_analytics"].get("reference", {}).get("dataset")
    if chosen is not None and chosen not in config["datasets"]:
        raise fail(
            ["graph_analytics", "reference", "dataset"],
            f"{chosen!r} is not one of the datasets {sorted(config['datasets'])}",
        )


def _absent_or_unknown(name: str | None) -> str:
    return "missing" if name is None else f"{name!r} is not a dataset"
