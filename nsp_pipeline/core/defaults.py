"""The default of every configuration setting, written once: in the packaged schema.

``config.schema.yaml``, next to this module and shipped with the package, is the JSON schema of
the configuration (``config.yaml`` of the workflow, ``--config`` of the command line). Each
setting's ``default:`` there is the one place its default value is written; the workflow, the
command line and the library's keyword arguments all read it through :func:`default`::

    >>> default("render.cmap")
    'RdBu_r'
    >>> default("models.*.train")["epochs"]
    20

The schema lives in ``core``, the lowest layer, because modules below :mod:`nsp_pipeline.io`
(render, transforms, analysis) take their defaults from it; reading it needs PyYAML only.
Validation against it, with the defaults filled in, is :mod:`nsp_pipeline.io.config`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

#: The configuration schema (JSON Schema 2020-12, written in YAML).
SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

with open(SCHEMA_PATH, encoding="utf-8") as _handle:
    #: The schema as read from :data:`SCHEMA_PATH` (shared: never modify it). LibYAML's parser
    #: where PyYAML has it: every job that renders or transforms reads this file at import.
    SCHEMA: dict = yaml.load(_handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def resolved(node: dict) -> dict:
    """A schema node with its local ``$ref`` (``#/$defs/...``) merged in; its own keys take precedence."""
    while "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    return node


def default(key_path: str) -> Any:
    """The default of one setting, as validation fills it in where the setting is absent.

    Parameters
    ----------
    key_path : str
        Dot-separated keys, e.g. ``"render.scale"`` or ``"laplacian.k"``. A key that names an
        entry of ``models`` or ``datasets`` may be any name, e.g. ``"models.*.train"``.

    Returns
    -------
    object
        A fresh copy of the schema's ``default:`` (with the defaults of its own settings
        filled in), or, for a section without one of its own (``models.*.train``), the
        defaults filled into an empty section.

    Raises
    ------
    KeyError
        If the schema has no such setting, or the setting has no default (``render.samples``).
    """
    node, walked = SCHEMA, []
    for key in key_path.split("."):
        node = resolved(node)
        properties = node.get("properties", {})
        if key in properties:
            node = properties[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            where = ".".join(walked) or "the top level"
            raise KeyError(f"config schema: {where} has no setting {key!r}; it has {sorted(properties)}")
        walked.append(key)
    node = resolved(node)
    value = copy.deepcopy(node["default"]) if "default" in node else {}
    fill_defaults(value, node)
    if "default" not in node and not value:
        raise KeyError(f"config schema: {key_path} has no default")
    return value


def fill_defaults(value: Any, node: dict = SCHEMA) -> None:
    """Fill in, in place, the defaults of every setting ``value`` leaves out.

    As ``snakemake.utils.validate`` does: each absent key of ``properties`` that has a
    ``default`` gets a copy of it, recursively through ``properties``, ``additionalProperties``
    (the entries of ``models`` and ``datasets``) and ``items``. Values of the wrong type are
    left alone, for validation to report.

    Parameters
    ----------
    value : object
        A configuration (or part of one, valid under ``node``).
    node : dict
        Its schema node; the whole schema by default.
    """
    node = resolved(node)
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for key, child in properties.items():
            if key not in value and "default" in resolved(child):
                value[key] = copy.deepcopy(resolved(child)["default"])
            if key in value:
                fill_defaults(value[key], child)
        if isinstance(node.get("additionalProperties"), dict):
            for key in value.keys() - properties.keys():
                fill_defaults(value[key], node["additionalProperties"])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            fill_defaults(item, node["items"])
