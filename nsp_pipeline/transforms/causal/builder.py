"""The exact causal transform of large networks, without materialising the closure.

Möbius inversion needs, for every layer ``L``, the sums ``Σ_{u ancestor of v} ŝ_u`` over the
strict ancestors of each of its neurons ``v``. For convolution, pooling, elementwise and linear
layers the ancestors of ``v`` in an earlier layer ``l`` form a union of boxes
``channels × rows × columns`` (:mod:`nsp_pipeline.graph.kronecker`), obtained by composing the
per-axis relations of every layer on the way. So each sum is a few small per-axis operations
on ``ŝ_l`` — channel sums and banded row/column sums — and memory stays O(n).

Operations whose relation does not factorise raise :class:`NotFactorizableError`; callers then
use the sparse closure of :mod:`nsp_pipeline.transforms.causal.closure`, which is exact for any graph.
"""

from __future__ import annotations

import numpy as np

from nsp_pipeline.graph.kronecker import AxisMap, Relation
from nsp_pipeline.graph.relations import ancestor_relations
from nsp_pipeline.model.capture import eval_mode
from nsp_pipeline.model.records import Trace
from nsp_pipeline.transforms.causal.factorized import FactorizedCausalOperator


def _single_parent_relations(parts, in_grids, input_layers, ancestors) -> dict[int, Relation] | None:
    """Relations to one parent per neuron whose down-set holds all the neuron's ancestors, else None.

    Either every neuron has exactly one parent (elementwise operations, reshapes, concatenation),
    or one input gives each neuron exactly one parent ``p(v)`` and every parent ``u`` of ``v`` in
    the other inputs is an ancestor of ``p(v)`` (a residual ``x + f(x)``: ``x`` is an ancestor of
    ``f(x)`` position by position). Either way ``Σ_{u<v} ŝ_u = Σ_p s_p`` over the returned parents:
    the ancestor sum is read from the activations, with no cancellation.
    """
    if len(parts) == 1:
        k, relation = parts[0]
        return {input_layers[k]: relation} if _one_parent_each(relation, in_grids[k]) else None
    counts, relations = [], {}
    for k, relation in parts:
        if input_layers[k] in relations:
            return None
        relations[input_layers[k]] = relation
        counts.append(_parent_counts(relation, in_grids[k]))
    if np.all(sum(counts) == 1):
        return relations
    for k, (_, relation) in enumerate(parts):
        parent = input_layers[k]
        if not np.all(counts[k] == 1):
            continue
        if all(
            source in ancestors[parent] and _covers(relation.compose(ancestors[parent][source]), other)
            for source, other in relations.items()
            if source != parent
        ):
            return {parent: relation}
    return None


def _one_parent_each(relation: Relation, in_grid: tuple[int, int, int]) -> bool:
    """Whether every target neuron relates to exactly one source neuron."""
    if len(relation.terms) == 1:  # a product of per-axis counts is 1 where each count is
        return all(bool(np.all(_row_counts(axis) == 1)) for axis in relation.terms[0].axes)
    return bool(np.all(_parent_counts(relation, in_grid) == 1))


def _parent_counts(relation: Relation, in_grid: tuple[int, int, int]) -> np.ndarray:
    """Each target neuron's number of related source neurons (``Relation.apply`` to ones)."""
    if len(relation.terms) != 1:
        return relation.apply(np.ones((1, *in_grid)))
    channels, rows, cols = (_row_counts(axis) for axis in relation.terms[0].axes)
    return channels[:, None, None] * rows[:, None] * cols


def _row_counts(axis: AxisMap) -> np.ndarray:
    """Each target position's number of related source positions."""
    if axis.outer is not None:
        return axis.outer[0] * float(axis.outer[1].sum())
    return np.diff(axis.matrix.indptr).astype(np.float64)


def _covers(relation: Relation, other: Relation) -> bool:
    """Whether every pair of ``other`` is in ``relation`` (each term inside one term: sufficient)."""
    return all(any(term.contains(part) for term in relation.terms) for part in other.terms)


def factorized_operator(recorded: Trace) -> FactorizedCausalOperator:
    """Ancestor relations of every layer of a traced model (structural edges, ``incl=True``).

    Under granularity ``merged`` a layer's merged unary operations keep its relations (one
    neuron to one neuron, in its own order), and inputs read through merged reshapes are read
    like reshaped layers; inputs read through a reordering (``permute``) do not factorise.

    Parameters
    ----------
    recorded : Trace
        A trace of one reference sample (``nsp_pipeline.model.capture.trace(model, x[:1], ...)``).

    Raises
    ------
    NotFactorizableError
        If some layer's relation does not factorise (use the sparse closure instead).
    """
    with eval_mode(recorded.model):
        grids, ancestors, parts = ancestor_relations(recorded)
    single_parents: list[dict[int, Relation] | None] = [None]
    for index in range(1, len(recorded.layout)):
        inputs = recorded.calls[index].input_layers
        in_grids = [grids[p] for p in inputs]
        single_parents.append(_single_parent_relations(parts[index], in_grids, inputs, ancestors))
    return FactorizedCausalOperator(recorded.layout, grids, ancestors, single_parents)
