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

import logging

import numpy as np

from nsp_pipeline.core.errors import NotFactorizableError
from nsp_pipeline.core.progress import progress
from nsp_pipeline.graph.kronecker import Relation
from nsp_pipeline.graph.relations import natural_grid, op_relations
from nsp_pipeline.model.capture import eval_mode
from nsp_pipeline.model.records import Trace
from nsp_pipeline.transforms.causal.factorized import FactorizedCausalOperator

log = logging.getLogger(__name__)


def _single_parent_relations(parts, in_grids, out_grid, input_layers) -> dict[int, Relation] | None:
    """The parent relations if every output neuron has exactly one parent, else None."""
    count = np.zeros((1, *out_grid))
    relations: dict[int, Relation] = {}
    for k, relation in parts:
        if input_layers[k] in relations:
            return None
        relations[input_layers[k]] = relation
        count = count + relation.apply(np.ones((1, *in_grids[k])))
    return relations if np.all(count == 1) else None


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
    layout = recorded.layout
    grids = [natural_grid(layout.layers[0].shape)]
    ancestors: list[dict[int, Relation]] = [{}]
    single_parents: list[dict[int, Relation] | None] = [None]
    with eval_mode(recorded.model):
        for index in progress(range(1, len(layout)), "causal relations", unit="layer"):
            call = recorded.calls[index]
            try:
                out_grid, parts = op_relations(call, [grids[p] for p in call.input_layers])
            except NotFactorizableError as error:
                name = layout.layers[index].name
                raise NotFactorizableError(f"layer {index} {name!r} ({call.kind}): {error}") from None
            relations: dict[int, Relation] = {}
            for k, edges in parts:
                parent = call.input_layers[k]
                relations.setdefault(parent, Relation()).union(edges)
                for source, relation in ancestors[parent].items():
                    relations.setdefault(source, Relation()).union(edges.compose(relation))
            in_grids = [grids[p] for p in call.input_layers]
            single_parents.append(_single_parent_relations(parts, in_grids, out_grid, call.input_layers))
            grids.append(out_grid)
            ancestors.append(relations)
            log.info("relations of layer %d/%d %r", index, len(layout) - 1, layout.layers[index].name)
    return FactorizedCausalOperator(layout, grids, ancestors, single_parents)
