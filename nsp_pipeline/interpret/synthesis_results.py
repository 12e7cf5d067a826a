"""The inputs of :func:`nsp_pipeline.interpret.synthesis.synthesize` with their metadata (torch-free).

:class:`SynthesisResult` holds numpy arrays and small JSON-able metadata only, so that storage
(:meth:`SynthesisResult.to_arrays`, :meth:`SynthesisResult.attributes`) and drawing
(:mod:`nsp_pipeline.render.synthesis_plots`) never import torch.

Stored form (``to_arrays`` names; ``n`` objectives, one synthesised input each, ``S`` steps):

====================  ======================  ====================================================
name                  shape, dtype            meaning
====================  ======================  ====================================================
``inputs``            ``(n, *input_shape)``   the synthesised inputs (float32)
``trajectory``        ``(S, n)`` float64      each objective at each step, on the transformed
                                              input the step's gradient came from
``values``            ``(n,)`` float64        each objective on its final input (no transforms)
``start``             ``(n,)`` int64          the start that gave the input: ``k < r`` random
                                              start ``k`` (``r = parameters["restarts"]``),
                                              ``r`` the best candidate optimised, ``r + 1`` the
                                              best candidate itself (no start ended higher)
``candidate``         ``(n,)`` int64          the row of the best candidate (−1: none given)
``candidate_values``  ``(n,)`` float64        its objective (NaN: none given)
====================  ======================  ====================================================

:meth:`~SynthesisResult.attributes` gives the rest: ``schema``, ``objectives`` (per input, a list
of ``{"target": {layer, channel, unit, reduction}, "weight": w}``; 0-based), ``parameters`` (every
parameter used, defaults included) and ``granularity``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nsp_pipeline.interpret.results import json_safe, target_label, target_record

#: Version of the stored form (``attributes()["schema"]``).
SCHEMA = "nsp-pipeline synthesis 2"
#: Names of :meth:`SynthesisResult.to_arrays`.
ARRAYS = ("inputs", "trajectory", "values", "start", "candidate", "candidate_values")


def objective_record(terms: Sequence[Mapping]) -> tuple[dict, ...]:
    """An objective as JSON-able terms ``({"target": target_record, "weight": float}, ...)``."""
    if not terms:
        raise ValueError("an objective needs at least one term {'target': ..., 'weight': ...}")
    return tuple(
        {"target": target_record(**dict(term["target"])), "weight": float(term["weight"])} for term in terms
    )


def objective_label(terms: Sequence[Mapping]) -> str:
    """Short name of an objective: ``conv2[5] mean``, ``−fc[3]``, ``fc[3] − 0.5·fc[5]``."""
    parts = []
    for number, term in enumerate(terms):
        weight, name = term["weight"], target_label(term["target"])
        sign = "−" if weight < 0 else ("+" if number else "")
        size = abs(weight)
        text = name if size == 1 else f"{size:.3g}·{name}"
        parts.append(f"{sign} {text}".strip() if number else f"{sign}{text}")
    return " ".join(parts)


@dataclass(frozen=True, eq=False)
class SynthesisResult:
    """Synthesised inputs, one per objective, with the trajectory of each objective.

    Parameters
    ----------
    inputs : numpy.ndarray
        ``(n, *input_shape)``: input ``i`` maximises objective ``i``.
    objectives : sequence of sequence of dict
        Per input, its terms ``{"target": target_record, "weight": w}`` (:func:`objective_record`):
        the objective is ``Σ w · target``.
    trajectory : numpy.ndarray
        ``(steps, n)``: each objective at each step (on that step's transformed input).
    values : numpy.ndarray
        ``(n,)``: each objective on its final input, untransformed.
    parameters : mapping
        Everything :func:`~nsp_pipeline.interpret.synthesis.synthesize` ran with (JSON-able).
    granularity : str
        How the targets name layers (:mod:`nsp_pipeline.model.capture`).
    start : numpy.ndarray, optional
        ``(n,)`` int: which start gave each input (codes in the module docstring; :meth:`start_label`).
        Default: all 0, the one random start.
    candidate, candidate_values : numpy.ndarray, optional
        ``(n,)``: each objective's best candidate (its row, −1 for none) and its value (NaN for
        none). Default: none.

    Raises
    ------
    ValueError
        If shapes disagree (the message names the array and the shape expected).
    """

    inputs: np.ndarray
    objectives: tuple[tuple[dict, ...], ...]
    trajectory: np.ndarray
    values: np.ndarray
    parameters: dict
    granularity: str = "merged"
    start: np.ndarray | None = None
    candidate: np.ndarray | None = None
    candidate_values: np.ndarray | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "inputs", np.asarray(self.inputs, dtype=np.float32))
        put(self, "objectives", tuple(objective_record(terms) for terms in self.objectives))
        n = len(self.objectives)
        if len(self.inputs) != n:
            raise ValueError(
                f"inputs has shape {self.inputs.shape}; expected ({n}, *input_shape), one per objective"
            )
        put(self, "trajectory", np.asarray(self.trajectory, dtype=np.float64))
        if self.trajectory.ndim != 2 or self.trajectory.shape[1] != n:
            raise ValueError(f"trajectory has shape {self.trajectory.shape}; expected (steps, {n})")
        put(self, "values", np.asarray(self.values, dtype=np.float64))
        if self.values.shape != (n,):
            raise ValueError(f"values has shape {self.values.shape}; expected ({n},)")
        put(self, "parameters", json_safe(dict(self.parameters)))
        for name, dtype, missing in (
            ("start", np.int64, 0),
            ("candidate", np.int64, -1),
            ("candidate_values", np.float64, np.nan),
        ):
            given = getattr(self, name)
            put(self, name, np.full(n, missing, dtype) if given is None else np.asarray(given, dtype=dtype))
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}; expected ({n},)")
        restarts = int(self.parameters.get("restarts", 1))
        if ((self.start < 0) | (self.start > restarts + 1)).any():
            raise ValueError(f"start holds {self.start.tolist()}; expected codes 0 … {restarts + 1}")

    @property
    def n_inputs(self) -> int:
        """Number of synthesised inputs (objectives)."""
        return len(self.objectives)

    @property
    def steps(self) -> int:
        """Number of optimisation steps recorded."""
        return len(self.trajectory)

    def label(self, k: int) -> str:
        """Short name of objective ``k`` (:func:`objective_label`)."""
        return objective_label(self.objectives[k])

    def channel_of(self, k: int) -> tuple[str, int] | None:
        """``(layer, channel)`` if objective ``k`` is one channel with weight 1 and no unit, else None."""
        terms = self.objectives[k]
        target = terms[0]["target"]
        if len(terms) != 1 or terms[0]["weight"] != 1.0 or target["channel"] is None or target["unit"]:
            return None
        return target["layer"], target["channel"]

    def start_label(self, k: int) -> str:
        """Which start gave input ``k``: ``random start 2``, ``best candidate (row 7), optimised`` …"""
        restarts, start = int(self.parameters.get("restarts", 1)), int(self.start[k])
        if start < restarts:
            return f"random start {start}"
        how = "optimised" if start == restarts else "unoptimised"
        return f"best candidate (row {int(self.candidate[k])}), {how}"

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named numpy arrays (names as in the module docstring)."""
        return {name: getattr(self, name) for name in ARRAYS}

    def attributes(self) -> dict:
        """JSON-able metadata (``json.dumps`` works on it); with :meth:`to_arrays`, everything."""
        return {
            "schema": SCHEMA,
            "objectives": [[dict(term) for term in terms] for terms in self.objectives],
            "parameters": self.parameters,
            "granularity": self.granularity,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], attributes: Mapping) -> SynthesisResult:
        """Rebuild from :meth:`to_arrays` and :meth:`attributes` (``ValueError`` naming what is missing)."""
        if attributes.get("schema") != SCHEMA:
            raise ValueError(f"attributes have schema {attributes.get('schema')!r}, expected {SCHEMA!r}")
        missing = [name for name in ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"arrays {missing} are missing; expected {list(ARRAYS)}")
        return cls(
            objectives=tuple(attributes["objectives"]),
            parameters=attributes["parameters"],
            granularity=attributes["granularity"],
            **{name: np.asarray(arrays[name]) for name in ARRAYS},
        )
