"""The exact linear regions of a piecewise-linear network on a 2-D slice of its input space.

A network made of continuous piecewise-linear operations (linear maps, convolutions, eval-mode
batch norm, average pools, additions, concatenations, ReLU-like activations, max-pools, ...) is
affine on each cell of a partition of its input space; on a 2-D slice the cells are convex
polygons (SplineCam: Humayun, Balestriero, Balakrishnan & Baraniuk, *Exact visualization and
characterization of deep network geometry and decision boundaries*, CVPR 2023).
:func:`linear_regions` computes them exactly, in float64, for any model ``torch.fx`` can trace.

How. The operation registry (:mod:`nsp_pipeline.model.ops`, slot ``kinks``) says which operations
are affine, which bend and where: a *sign site* (ReLU, LeakyReLU, abs: the input; ReLU6,
hardtanh, clamp: the input minus each bound) bends where its value crosses 0; an *argmax site*
(max-pool window, ``maximum``) where its largest piece changes. The kink layers are taken in
the graph's order. Before layer ``k``, every cell has one pattern at all earlier layers, so the
sites of layer ``k`` are affine on the cell: their values and slopes at an interior point
(forward-mode differentiation, :func:`torch.func.jvp`) give them exactly. A cell is then split by
each site that bends inside it, one site at a time per piece (a binary space partition over the
sites crossing the cell, vectorised across all pieces with numpy), a sign site along its zero
line, an argmax site into the regions of its pieces (never along a tie of two pieces that are
not the largest, which would over-split). After the last layer each cell's affine output map
``f(t) = A t + c`` comes from the same differentiation, and the decision boundary from splitting
each cell by the argmax of its affine logits.

Tolerance. A site's value counts as zero within ``rtol`` times its largest absolute value at the
cell's vertices, and never less than ``atol`` times the largest absolute value of the layer's
sites at the region's corners and centre (so sites that vanish on a cell, up to rounding, do
not split it). Pieces smaller than :data:`~nsp_pipeline.interpret.polygons.SLIVER_AREA` of
their cell are dropped.

Memory stays bounded: cells are processed in chunks of about ``chunk_bytes``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.func import jvp, vmap

from nsp_pipeline.core.errors import UnsupportedLayerError
from nsp_pipeline.core.progress import progress_bar
from nsp_pipeline.interpret import polygons
from nsp_pipeline.interpret.region_results import RegionPartition, decision_boundary, tie_segments
from nsp_pipeline.interpret.slices import Slice
from nsp_pipeline.model import ops
from nsp_pipeline.model.capture import fx_trace
from nsp_pipeline.model.records import target_kind

#: A site's value is zero within this fraction of its largest absolute value on the cell.
RTOL = 1e-9
#: ... and within this fraction of the layer's scale (its largest absolute value at the region's
#: corners and centre).
ATOL = 1e-12
#: Memory for one chunk of cells (bytes, approximate).
CHUNK_BYTES = 2**27


def linear_regions(
    model: nn.Module,
    slice_: Slice,
    *,
    patterns: bool = True,
    pair: tuple[int, int] | None = None,
    progress: Callable[[str, int], None] | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
    chunk_bytes: int = CHUNK_BYTES,
) -> RegionPartition:
    """The exact partition of a slice into the network's linear regions, with its decision boundary.

    Parameters
    ----------
    model : nn.Module
        A network of piecewise-linear operations taking one input of the slice's shape (without
        the batch axis) and returning ``(batch, n_outputs)`` (or ``(batch,)``, a scalar output). It
        is copied and run in float64, in eval mode.
    slice_ : Slice
        The plane and its region (:class:`~nsp_pipeline.interpret.slices.Slice`).
    patterns : bool
        Whether to store each cell's activation pattern (it takes one bit per sign site and one
        byte per argmax site and cell).
    pair : (int, int), optional
        Two classes whose tie (the zero line of the difference of their outputs) is returned.
    progress : callable, optional
        ``progress(layer_name, n_cells)`` after each kink layer and at the end (``"output"``).
    rtol, atol : float
        Tolerances (see the module docstring).
    chunk_bytes : int
        Approximate memory per chunk of cells.

    Returns
    -------
    RegionPartition

    Raises
    ------
    UnsupportedLayerError
        If an operation that depends on the input is not piecewise linear (naming the layer).
    TraceError
        If ``torch.fx`` cannot trace the model.
    """
    network = _Network(model, slice_)
    vertices, offsets = slice_.region, np.array([0, len(slice_.region)])
    counts = []
    bar = progress_bar(len(network.layer_names) + 1, "linear regions", unit="layer")
    with bar:
        for layer, name in enumerate(network.layer_names):
            vertices, offsets = _split_layer(network, layer, vertices, offsets, rtol, atol, chunk_bytes)
            counts.append(len(offsets) - 1)
            bar.set_postfix(cells=counts[-1])
            bar.update()
            if progress is not None:
                progress(name, counts[-1])
        affine_A, affine_c, pattern_bytes = _outputs(network, vertices, offsets, patterns, chunk_bytes)
        boundary = decision_boundary(vertices, offsets, affine_A, affine_c, rtol)
        bar.update()
    if progress is not None:
        progress("output", len(offsets) - 1)
    return RegionPartition(
        vertices=vertices,
        offsets=offsets,
        patterns=pattern_bytes,
        affine_A=affine_A,
        affine_c=affine_c,
        areas=polygons.areas(vertices, offsets),
        slope_norm=np.sqrt((affine_A**2).sum((1, 2))),
        predicted=boundary["predicted"],
        touches_boundary=boundary["touches"],
        layer_names=network.layer_names,
        cells_after_layer=np.asarray(counts, dtype=np.int64),
        layer_sites=np.asarray(network.layer_sites, dtype=np.int64),
        layer_pieces=np.asarray(network.layer_pieces, dtype=np.int64),
        boundary_segments=boundary["segments"],
        boundary_classes=boundary["classes"],
        boundary_cells=boundary["cells"],
        domain=slice_.region,
        anchors=slice_.anchors,
        anchor_labels=slice_.anchor_labels,
        origin=slice_.origin,
        directions=slice_.directions,
        pair=pair,
        pair_segments=(
            np.zeros((0, 2, 2))
            if pair is None
            else tie_segments(vertices, offsets, affine_A, affine_c, *pair)
        ),
        parameters={
            "model": type(model).__name__,
            "rtol": rtol,
            "atol": atol,
        },
    )


class _Network:
    """The model's fx graph in float64 on points of a slice, with its kink layers.

    ``layer_names``, ``layer_sites``, ``layer_pieces``: per kink layer (a node whose operation
    bends), its name, number of sites and pieces per site; ``layer_scale`` its largest absolute
    site value at the region's corners and centre; ``activation_size`` the summed size of every
    node's output for one input (for chunk sizes).
    """

    def __init__(self, model: nn.Module, slice_: Slice) -> None:
        model = copy.deepcopy(model).to(torch.float64).eval()
        for module in model.modules():
            if getattr(module, "inplace", False):
                module.inplace = False  # kink values are read before the operation runs
        graph_module = fx_trace(model)
        self.modules = dict(graph_module.named_modules())
        self.nodes = list(graph_module.graph.nodes)
        placeholders = [node for node in self.nodes if node.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedLayerError(
                f"the model takes {len(placeholders)} inputs; linear regions need one"
            )
        self.dependent: set[torch.fx.Node] = set()
        self.entries: dict[torch.fx.Node, ops.Operation] = {}
        for node in self.nodes:
            if node.op == "placeholder" or (
                node.op.startswith("call") and any(n in self.dependent for n in node.all_input_nodes)
            ):
                self.dependent.add(node)
                if node.op != "placeholder":
                    self.entries[node] = self._entry(node)
        self.shape = slice_.origin.shape
        self.origin = torch.from_numpy(slice_.origin.reshape(-1)).to(torch.float64)
        self.directions = torch.from_numpy(slice_.directions.reshape(2, -1)).to(torch.float64)
        probe = np.concatenate([slice_.region, slice_.region.mean(0, keepdims=True)])
        with torch.no_grad():
            output, kinks, names, sizes = self._run(self._inputs(torch.from_numpy(probe)), describe=True)
        if not isinstance(output, torch.Tensor) or output.ndim not in (1, 2):
            raise UnsupportedLayerError(
                "linear regions need a model returning one tensor (batch, n_outputs) or (batch,), got "
                f"{type(output).__name__} {tuple(getattr(output, 'shape', ()))}"
            )
        for name, values in zip(names, kinks):
            if values.shape[2] > 256:
                raise UnsupportedLayerError(
                    f"layer {name!r} takes the largest of {values.shape[2]} values; at most 256 are supported"
                )
        self.layer_names = tuple(names)
        self.layer_sites = [values.shape[1] for values in kinks]
        self.layer_pieces = [values.shape[2] for values in kinks]
        self.layer_scale = [
            float(values[torch.isfinite(values)].abs().max().item()) if torch.isfinite(values).any() else 0.0
            for values in kinks
        ]
        self.activation_size = sum(sizes) // len(probe)

    def _entry(self, node: torch.fx.Node) -> ops.Operation:
        """The registry entry of an input-dependent node; refuses one that is not piecewise linear."""
        target = self._target(node)
        name, kind = self._name(node), target_kind(target)
        try:
            entry = ops.lookup(target)
        except UnsupportedLayerError:
            raise UnsupportedLayerError(
                f"layer {name!r} ({kind}) is not in the operation registry, so it is not known to be "
                "piecewise linear; linear regions need continuous piecewise-linear operations"
            ) from None
        if entry.kinks is None:
            raise UnsupportedLayerError(
                f"layer {name!r} ({kind}) is not piecewise linear; linear regions need piecewise-linear "
                "operations (linear, convolution, eval batch norm, pooling, ReLU, LeakyReLU, abs, "
                "hardtanh, max-pool, ...)"
            )
        return entry

    def _target(self, node: torch.fx.Node):
        return self.modules[node.target] if node.op == "call_module" else node.target

    @staticmethod
    def _name(node: torch.fx.Node) -> str:
        return str(node.target) if node.op == "call_module" else node.name

    def _inputs(self, t: torch.Tensor) -> torch.Tensor:
        """The inputs at slice coordinates ``t`` ``(n, 2)``."""
        return (self.origin + t @ self.directions).reshape(len(t), *self.shape)

    def _run(self, x: torch.Tensor, stop: int | None = None, describe: bool = False):
        """Run the graph on ``x``; return (output, kink site values per layer[, names, sizes]).

        With ``stop``, return as soon as kink layer ``stop`` is known (output ``None``).
        """
        env: dict[torch.fx.Node, object] = {}
        kinks, names, sizes = [], [], []
        for node in self.nodes:
            if node.op == "placeholder":
                env[node] = x
                continue
            if node.op == "get_attr":
                env[node] = _fetch(self.modules[""], node.target)
                continue
            if node.op == "output":
                output = torch.fx.graph.map_arg(node.args[0], env.__getitem__)
                return (output, kinks, names, sizes) if describe else (output, kinks)
            target = self._target(node)
            args = torch.fx.graph.map_arg(node.args, env.__getitem__)
            kwargs = torch.fx.graph.map_arg(node.kwargs, env.__getitem__)
            entry = self.entries.get(node)
            if entry is not None:
                varying = [env[n] for n in node.all_input_nodes if n in self.dependent]
                try:
                    sites = entry.kinks(target, args, kwargs, _identity_check(varying))
                except UnsupportedLayerError as error:
                    raise UnsupportedLayerError(
                        f"layer {self._name(node)!r} ({target_kind(target)}) is not piecewise linear: {error}"
                    ) from None
                if sites is not None:
                    kinks.append(sites.clone())
                    names.append(self._name(node))
                    if stop is not None and len(kinks) > stop:
                        return None, kinks
            if entry is not None and entry.name == "cast":
                result = args[0]  # regions are computed in float64 throughout
            elif node.op == "call_method":
                result = getattr(args[0], target)(*args[1:], **kwargs)
            else:
                result = target(*args, **kwargs)
            env[node] = result
            if describe and isinstance(result, torch.Tensor):
                sizes.append(result.numel())
        raise AssertionError("the graph has no output node")

    def affine(self, t: np.ndarray, stop: int | None) -> tuple[np.ndarray, np.ndarray, list]:
        """Values and slopes w.r.t. ``t`` at points ``t`` ``(n, 2)``.

        ``stop`` a layer: its site values ``(n, S, w)`` and slopes ``(n, S, w, 2)``. ``None``: the
        output ``(n, k)`` and its slopes ``(n, k, 2)``, and every layer's site values.
        """
        points = torch.from_numpy(np.ascontiguousarray(t))
        n = len(points)

        def evaluate(coordinates):
            output, kinks = self._run(self._inputs(coordinates), stop)
            if stop is None:
                return output.reshape(n, -1), kinks
            return kinks[stop], ()

        tangents = torch.eye(2, dtype=torch.float64)[:, None, :].expand(2, n, 2)
        value, slopes, aux = vmap(
            lambda tangent: jvp(evaluate, (points,), (tangent,), has_aux=True), out_dims=(None, 0, None)
        )(tangents)
        slopes = torch.movedim(slopes, 0, -1)
        return value.detach().numpy(), slopes.detach().numpy(), [a.detach().numpy() for a in aux]


def _identity_check(values: list) -> Callable[[object], bool]:
    """``check(value)``: whether ``value`` is one of ``values`` (the arguments that depend on the input)."""
    return lambda value: any(value is other for other in values)


def _fetch(module: nn.Module, target: str):
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


@dataclass
class _Records:
    """The sites that cross cells: per record its cell, its pieces' affine functions and tolerance."""

    cell: np.ndarray  # (R,)
    intercepts: np.ndarray  # (R, w): values at the cell's vertex mean
    slopes: np.ndarray  # (R, w, 2)
    origins: np.ndarray  # (R, 2): the cell's vertex mean
    tol: np.ndarray  # (R,)
    valid: np.ndarray  # (R, w) bool


def _chunks(network: _Network, layer: int | None, offsets: np.ndarray, chunk_bytes: int) -> int:
    """Cells per chunk: the differentiated network and the sites at the vertices fit in ``chunk_bytes``."""
    n_cells = len(offsets) - 1
    per_vertex = offsets[-1] / max(n_cells, 1)
    if layer is None:
        sites = sum(s * w for s, w in zip(network.layer_sites, network.layer_pieces))
        per_cell = 8 * (3 * network.activation_size + sites)
    else:
        sites = network.layer_sites[layer] * network.layer_pieces[layer]
        per_cell = 8 * (3 * network.activation_size + sites * (3 + 4 * per_vertex))
    return max(1, int(chunk_bytes // per_cell))


def _split_layer(
    network: _Network,
    layer: int,
    vertices: np.ndarray,
    offsets: np.ndarray,
    rtol: float,
    atol: float,
    chunk_bytes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split every cell by the sites of one kink layer."""
    chunk = _chunks(network, layer, offsets, chunk_bytes)
    floor = atol * network.layer_scale[layer]
    n_cells = len(offsets) - 1
    parts_vertices, parts_counts = [], []
    for start in range(0, n_cells, chunk):
        cells = np.arange(start, min(start + chunk, n_cells))
        cell_vertices, cell_offsets = polygons.take(vertices, offsets, cells)
        centre = polygons.vertex_means(cell_vertices, cell_offsets)
        values, slopes, _ = network.affine(centre, layer)
        records = _crossing(cell_vertices, cell_offsets, centre, values, slopes, rtol, floor)
        max_pairs = max(
            1, chunk_bytes // (64 * records.valid.shape[1] * max(1, cell_offsets[-1] // len(cells)))
        )
        split_vertices, split_offsets = _partition(cell_vertices, cell_offsets, records, max_pairs)
        parts_vertices.append(split_vertices)
        parts_counts.append(np.diff(split_offsets))
    return np.concatenate(parts_vertices), polygons.offsets_of(np.concatenate(parts_counts))


def _crossing(
    vertices: np.ndarray,
    offsets: np.ndarray,
    centre: np.ndarray,
    values: np.ndarray,
    slopes: np.ndarray,
    rtol: float,
    floor: float,
) -> _Records:
    """The (cell, site) pairs where the site bends inside the cell, as records."""
    owner = polygons.owners(offsets)
    local = vertices - centre[owner]
    starts = offsets[:-1]
    width = values.shape[2]
    if width == 1:  # sign sites: both signs beyond the tolerance
        z = (
            values[owner, :, 0]
            + local[:, :1] * slopes[owner, :, 0, 0]
            + local[:, 1:] * slopes[owner, :, 0, 1]
        )
        high = np.maximum.reduceat(z, starts, axis=0)
        low = np.minimum.reduceat(z, starts, axis=0)
        tol = np.maximum(rtol * np.maximum(high, -low), floor)
        cell, site = np.nonzero((high > tol) & (low < -tol))
        zero = np.zeros(len(cell))
        return _Records(
            cell=cell,
            intercepts=np.stack([zero, values[cell, site, 0]], 1),
            slopes=np.stack([np.zeros((len(cell), 2)), slopes[cell, site, 0]], 1),
            origins=centre[cell],
            tol=tol[cell, site],
            valid=np.ones((len(cell), 2), dtype=bool),
        )
    valid = np.isfinite(values)
    finite = np.where(valid, values, 0.0)
    z = (
        finite[owner]
        + local[:, None, None, 0] * slopes[owner, ..., 0]
        + local[:, None, None, 1] * slopes[owner, ..., 1]
    )
    z = np.where(valid[owner], z, -np.inf)
    scale = np.maximum.reduceat(np.where(valid[owner], np.abs(z), 0.0).max(2), starts, axis=0)
    tol = np.maximum(rtol * scale, floor)
    dominant = z >= (z.max(2) - tol[owner])[..., None]
    bends = ~np.logical_and.reduceat(dominant, starts, axis=0).any(2)
    cell, site = np.nonzero(bends)
    return _Records(
        cell=cell,
        intercepts=finite[cell, site],
        slopes=slopes[cell, site],
        origins=centre[cell],
        tol=tol[cell, site],
        valid=valid[cell, site],
    )


def _partition(
    vertices: np.ndarray, offsets: np.ndarray, records: _Records, max_pairs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split cells by the sites that cross them: a binary space partition, one site per piece and round.

    Each round, every piece is tested against the sites left in its list (a site that no longer
    crosses it is dropped), pieces with none left are final, and every other piece is split by
    the first site of its list into that site's regions; the children inherit the rest of the list.
    Work is a stack of groups of pieces; a group with more than ``max_pairs`` (piece, site) pairs
    is halved first, so memory stays bounded when many sites cross one cell.
    """
    stack = [(vertices, offsets, records.cell, np.arange(len(records.cell)))]
    final_vertices, final_counts = [], []
    while stack:
        piece_vertices, piece_offsets, pair_piece, pair_record = stack.pop()
        n_pieces = len(piece_offsets) - 1
        if len(pair_piece) > max_pairs and n_pieces > 1:
            middle = min(max(int(pair_piece[len(pair_piece) // 2]), 1), n_pieces - 1)
            cut = np.searchsorted(pair_piece, middle)
            for pieces, pairs in (
                (np.arange(middle), slice(0, cut)),
                (np.arange(middle, n_pieces), slice(cut, None)),
            ):
                stack.append(
                    (
                        *polygons.take(piece_vertices, piece_offsets, pieces),
                        pair_piece[pairs] - pieces[0],
                        pair_record[pairs],
                    )
                )
            continue
        if len(pair_piece):
            crossing = _still_crossing(piece_vertices, piece_offsets, pair_piece, pair_record, records)
            pair_piece, pair_record = pair_piece[crossing], pair_record[crossing]
        active = np.zeros(n_pieces, dtype=bool)
        active[pair_piece] = True
        done_vertices, done_offsets = polygons.take(piece_vertices, piece_offsets, ~active)
        final_vertices.append(done_vertices)
        final_counts.append(np.diff(done_offsets))
        if not active.any():
            continue
        active = np.flatnonzero(active)
        position = np.searchsorted(active, pair_piece)
        first = np.searchsorted(position, np.arange(len(active)))
        chosen = pair_record[first]
        sub_vertices, sub_offsets = polygons.take(piece_vertices, piece_offsets, active)
        child_vertices, child_offsets, parent, _ = polygons.argmax_split(
            sub_vertices,
            sub_offsets,
            records.intercepts[chosen],
            records.slopes[chosen],
            records.origins[chosen],
            records.tol[chosen],
            records.valid[chosen],
        )
        rest = np.ones(len(pair_piece), dtype=bool)
        rest[first] = False
        rest_position, rest_record = position[rest], pair_record[rest]
        counts = np.bincount(rest_position, minlength=len(active))
        starts = np.cumsum(counts) - counts
        stack.append(
            (
                child_vertices,
                child_offsets,
                np.repeat(np.arange(len(parent)), counts[parent]),
                rest_record[polygons.ragged_range(starts[parent], counts[parent])],
            )
        )
    return np.concatenate(final_vertices), polygons.offsets_of(np.concatenate(final_counts))


def _still_crossing(
    vertices: np.ndarray,
    offsets: np.ndarray,
    pair_piece: np.ndarray,
    pair_record: np.ndarray,
    records: _Records,
) -> np.ndarray:
    """Per (piece, record) pair: whether no piece of the site is the largest at every vertex."""
    counts = np.diff(offsets)[pair_piece]
    index = polygons.ragged_range(offsets[:-1][pair_piece], counts)
    row = np.repeat(pair_record, counts)
    z = polygons.affine_values(vertices[index], row, records.intercepts, records.slopes, records.origins)
    z = np.where(records.valid[row], z, -np.inf)
    dominant = z >= (z.max(1) - records.tol[row])[:, None]
    return ~np.logical_and.reduceat(dominant, np.cumsum(counts) - counts, axis=0).any(1)


def _outputs(
    network: _Network, vertices: np.ndarray, offsets: np.ndarray, patterns: bool, chunk_bytes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell the affine output map ``(A, c)`` and the packed activation pattern."""
    chunk = _chunks(network, None, offsets, chunk_bytes)
    n_cells = len(offsets) - 1
    slopes_parts, offsets_parts, pattern_parts = [], [], []
    for start in range(0, n_cells, chunk):
        cells = np.arange(start, min(start + chunk, n_cells))
        centre = polygons.vertex_means(*polygons.take(vertices, offsets, cells))
        value, slopes, kinks = network.affine(centre, None)
        slopes_parts.append(slopes)
        offsets_parts.append(value - np.einsum("nkd,nd->nk", slopes, centre))
        if patterns:
            pattern_parts.append(
                np.concatenate(
                    [
                        np.packbits(sites[..., 0] > 0, axis=1)
                        if sites.shape[2] == 1
                        else sites.argmax(2).astype(np.uint8)
                        for sites in kinks
                    ]
                    or [np.zeros((len(cells), 0), dtype=np.uint8)],
                    1,
                )
            )
        else:
            pattern_parts.append(np.zeros((len(cells), 0), dtype=np.uint8))
    return np.concatenate(slopes_parts), np.concatenate(offsets_parts), np.concatenate(pattern_parts)
