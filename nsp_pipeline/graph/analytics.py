"""Analytics of the neuron DAG, computed on its CSR of in-edges, layer by layer.

Every function here works on :class:`~nsp_pipeline.graph.neuron_graph.NeuronGraph` directly:
no dense ``n × n`` matrix and no Python loop over edges, so the notebook's views of a network
(layer blocks of the adjacency, density, centralities, the directed Laplacian, longest paths,
products of consecutive linear maps) run on networks of millions of neurons. Node order is
topological and every edge ``u -> v`` goes from an earlier layer to a later one, so one sweep over
the layers in order is a topological pass: Katz centrality and PageRank are exact finite sums on a
DAG, longest paths and hop distances are dynamic programmes, and Jacobian blocks are sparse
products of consecutive layers.

Each function that uses edge weights takes ``weight``: ``"value"`` (the graph's weights, or ones
on an unweighted graph; :meth:`NeuronGraph.edge_values`), ``"abs"`` (their absolute values) or
``None`` (every edge weighs 1). Results are indexed by global node id; networkx's node keys are
:meth:`NeuronGraph.node_label` of those ids (``graph.to_networkx()``).

This module never imports torch.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from nsp_pipeline.graph.neuron_graph import NeuronGraph

#: Largest graph :func:`write_graphml` writes by default (networkx holds every edge as a Python dict).
GRAPHML_MAX_EDGES = 500_000

_WEIGHTS = ("value", "abs", None)


# ---------------------------------------------------------------------------------------------
# Helpers: edge values and the per-layer slices of the CSR


def _edge_weights(graph: NeuronGraph, weight: str | None) -> np.ndarray:
    """Float64 edge values aligned with ``graph.indices`` for the ``weight`` choice."""
    if weight == "value":
        return graph.edge_values()
    if weight == "abs":
        return np.abs(graph.edge_values())
    if weight is None:
        return np.ones(graph.n_edges)
    raise ValueError(f"weight must be one of {_WEIGHTS}, got {weight!r}")


def _nonnegative_weights(graph: NeuronGraph, weight: str | None, analytic: str) -> np.ndarray:
    """Edge values for a random walk, which needs them non-negative."""
    values = _edge_weights(graph, weight)
    negative = int(np.count_nonzero(values < 0))
    if negative:
        raise ValueError(
            f"{analytic} is a random walk and needs non-negative edge weights; this graph's "
            f"{graph.weight_kind} weights have {negative:,} negative values: pass weight='abs' (|w|) "
            "or weight=None (unweighted)"
        )
    return values


def _layer_in_edges(graph: NeuronGraph, layer: int, values: np.ndarray) -> sp.csr_array:
    """In-edges of one layer's nodes: ``(layer size, layer offset)`` matrix of ``values``.

    Every parent lies in an earlier layer, so the columns stop at the layer's first node; entry
    ``[v - offset, u]`` holds the value of edge ``u -> v``.
    """
    start, stop = (int(o) for o in graph.layout.offsets[layer : layer + 2])
    lo, hi = int(graph.indptr[start]), int(graph.indptr[stop])
    return sp.csr_array(
        (values[lo:hi], graph.indices[lo:hi], graph.indptr[start : stop + 1] - lo),
        shape=(stop - start, start),
    )


def _weighted_adjacency(graph: NeuronGraph, values: np.ndarray) -> sp.csr_array:
    """``M`` with ``M[v, u]`` = value of edge ``u -> v`` (the in-edge CSR itself)."""
    return sp.csr_array((values, graph.indices, graph.indptr), shape=(graph.n_nodes, graph.n_nodes))


def _segment_extreme(
    values: np.ndarray, indptr: np.ndarray, maximum: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row maximum (or minimum) of CSR ``values`` and the position of its first occurrence.

    Rows without entries get ``-inf`` (``+inf``) and position ``-1``.
    """
    counts = np.diff(indptr)
    rows = len(counts)
    extreme = np.full(rows, -np.inf if maximum else np.inf)
    position = np.full(rows, -1, dtype=np.int64)
    if len(values):
        nonempty = counts > 0
        ufunc = np.maximum if maximum else np.minimum
        extreme[nonempty] = ufunc.reduceat(values, indptr[:-1][nonempty])
        row_of = np.repeat(np.arange(rows), counts)
        hits = np.flatnonzero(values == extreme[row_of])
        first = hits[np.r_[True, row_of[hits[1:]] != row_of[hits[:-1]]]]
        position[row_of[first]] = first
    return extreme, position


def _node_range(graph: NeuronGraph, layers: int | str | tuple[int | str, int | str]) -> tuple[int, int]:
    """Node range ``[start, stop)`` of a layer or of a ``(first, last)`` run of layers."""
    layout = graph.layout
    if isinstance(layers, tuple):
        if len(layers) != 2:
            raise ValueError(f"a run of layers is a pair (first, last), got {layers!r}")
        first, last = layout.index(layers[0]), layout.index(layers[1])
        if first > last:
            raise ValueError(
                f"layer run {layers!r}: {layout.names[first]!r} comes after {layout.names[last]!r}"
            )
    else:
        first = last = layout.index(layers)
    return int(layout.offsets[first]), int(layout.offsets[last + 1])


# ---------------------------------------------------------------------------------------------
# Counts and blocks


def layer_edge_counts(graph: NeuronGraph) -> np.ndarray:
    """Number of edges between every pair of layers.

    The node count of each layer is ``numpy.diff(graph.layout.offsets)``.

    Returns
    -------
    numpy.ndarray
        ``(n_layers, n_layers)`` int64: ``counts[i, j]`` edges from layer ``i`` to layer ``j``
        (zero on and above the diagonal's upper side: edges go forward).
    """
    layout = graph.layout
    n_layers = len(layout)
    counts = np.zeros((n_layers, n_layers), dtype=np.int64)
    for j in range(1, n_layers):
        lo, hi = graph.indptr[layout.offsets[j]], graph.indptr[layout.offsets[j + 1]]
        sources = np.searchsorted(layout.offsets, graph.indices[lo:hi], side="right") - 1
        counts[:, j] = np.bincount(sources, minlength=n_layers)
    return counts


def density(graph: NeuronGraph) -> float:
    """Edge density ``m / (n (n - 1))`` of a directed graph, as :func:`networkx.density`.

    The notebook's CIFAR-10 network (``cifar10_cnn5``, merged) gives 0.0016151387935422858.
    """
    n = graph.n_nodes
    return 0.0 if n <= 1 else graph.n_edges / (n * (n - 1))


def adjacency_block(
    graph: NeuronGraph,
    source: int | str | tuple[int | str, int | str],
    target: int | str | tuple[int | str, int | str],
    weight: str | None = "value",
) -> sp.csr_array:
    """The block of the weighted adjacency from one layer (or run of layers) to another.

    Only the in-edges of the target nodes are read. The notebook densified the whole
    53,290 × 53,290 adjacency (22.7 GB in float64) to slice such a block out of it.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    source, target : int or str or tuple
        A layer by index or name, or a pair ``(first, last)`` for the consecutive layers from
        ``first`` to ``last`` inclusive (the notebook's 3,392 × 1,098 block of ``cifar10_cnn5`` is
        ``source=("max_pooling2d_1", "dense_0")``, ``target=("conv_2", "dense_1")``).
    weight : {"value", "abs", None}
        Edge values (see the module docstring).

    Returns
    -------
    scipy.sparse.csr_array
        ``(source nodes, target nodes)`` float64: entry ``[u, v]`` is the weight of the edge
        ``u -> v`` (rows are sources, as in ``networkx.adjacency_matrix``).
    """
    s0, s1 = _node_range(graph, source)
    t0, t1 = _node_range(graph, target)
    lo, hi = int(graph.indptr[t0]), int(graph.indptr[t1])
    parents = graph.indices[lo:hi]
    keep = (parents >= s0) & (parents < s1)
    targets = np.repeat(np.arange(t1 - t0), np.diff(graph.indptr[t0 : t1 + 1]))[keep]
    values = _edge_weights(graph, weight)[lo:hi][keep]
    return sp.coo_array((values, (parents[keep] - s0, targets)), shape=(s1 - s0, t1 - t0)).tocsr()


# ---------------------------------------------------------------------------------------------
# Centralities


def katz_centrality(
    graph: NeuronGraph,
    alpha: float = 0.1,
    beta: float | np.ndarray = 1.0,
    normalized: bool = True,
    weight: str | None = "value",
) -> np.ndarray:
    """Katz centrality ``x_v = alpha * sum_{u -> v} w_uv x_u + beta``, exactly, in one pass.

    On a DAG the adjacency is nilpotent, so ``x = sum_k (alpha Aᵀ)^k beta`` is a finite sum,
    exact for any ``alpha`` (networkx's ``1 / lambda_max`` bound is infinite here): one sweep
    over the layers in topological order computes it. Same convention as
    :func:`networkx.katz_centrality` with ``weight="weight"`` (in-edges count).

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    alpha : float
        Attenuation factor.
    beta : float or numpy.ndarray
        Constant term, for all nodes or per node (``(n_nodes,)``).
    normalized : bool
        Divide by the Euclidean norm, as :func:`networkx.katz_centrality` (which does not fix the
        sign; :func:`networkx.katz_centrality_numpy` also multiplies by the sign of the sum).
    weight : {"value", "abs", None}
        Edge values.

    Returns
    -------
    numpy.ndarray
        ``(n_nodes,)`` centralities.
    """
    values = _edge_weights(graph, weight)
    x = np.array(np.broadcast_to(np.asarray(beta, dtype=np.float64), (graph.n_nodes,)))
    for layer in range(1, len(graph.layout)):
        start, stop = graph.layout.offsets[layer : layer + 2]
        x[start:stop] += alpha * (_layer_in_edges(graph, layer, values) @ x[:start])
    if normalized:
        norm = np.linalg.norm(x)
        if norm > 0:
            x /= norm
    return x


def _transition_weights(graph: NeuronGraph, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge values divided by their source's out-weight, and the dangling-node mask."""
    out = np.bincount(graph.indices, weights=values, minlength=graph.n_nodes)
    dangling = out == 0
    scale = np.divide(1.0, out, out=np.zeros_like(out), where=~dangling)
    return values * scale[graph.indices], dangling


def pagerank(graph: NeuronGraph, alpha: float = 0.85, weight: str | None = "value") -> np.ndarray:
    """PageRank with uniform teleportation and dangling nodes, as :func:`networkx.pagerank`.

    The output layer has no out-edges: its nodes are dangling and their rank is spread
    uniformly, as in networkx. The fixed point ``x = alpha (x P + (x·d) / n) + (1 - alpha) / n``
    (``P`` the row-normalised adjacency, ``d`` the dangling mask) is ``x = c y`` with the scalar
    ``c = alpha x·d + 1 - alpha`` and ``y = (1/n) (I - alpha P)^{-1}``, a finite sum on a DAG:
    one topological pass gives ``y`` and ``x = y / sum(y)``, exactly, where networkx iterates to
    a tolerance.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    alpha : float
        Damping factor (probability of following an edge), in ``(0, 1)``.
    weight : {"value", "abs", None}
        Edge values; they must be non-negative (a random walk).

    Returns
    -------
    numpy.ndarray
        ``(n_nodes,)`` probabilities summing to 1.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    transition, _ = _transition_weights(graph, _nonnegative_weights(graph, weight, "pagerank"))
    y = np.full(graph.n_nodes, 1.0 / graph.n_nodes)
    for layer in range(1, len(graph.layout)):
        start, stop = graph.layout.offsets[layer : layer + 2]
        y[start:stop] += alpha * (_layer_in_edges(graph, layer, transition) @ y[:start])
    return y / y.sum()


def hits(
    graph: NeuronGraph, tol: float = 1e-12, max_iter: int | None = None, weight: str | None = "value"
) -> tuple[np.ndarray, np.ndarray]:
    """Hubs and authorities, as :func:`networkx.hits`.

    The authorities are the top right singular vector ``a`` of the adjacency ``A`` (``A[u, v]``
    = weight of ``u -> v``), the hubs ``h = A a``; each is divided by its sum (networkx's
    normalisation, which also fixes the sign). ``a`` is the top eigenvector of ``AᵀA``, found
    by Lanczos (:func:`scipy.sparse.linalg.eigsh`) with ``AᵀA`` applied as two passes over the
    CSR, from a fixed start vector. Where the top singular value is repeated the vectors are
    not unique (neither are networkx's); where it is close to the next one, Lanczos needs many
    steps (about 180 on the notebook's network).

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    tol : float
        Lanczos' relative accuracy for the top eigenvalue of ``AᵀA``.
    max_iter : int, optional
        Lanczos' restart limit (ARPACK's default: ``10 n``).
    weight : {"value", "abs", None}
        Edge values.

    Returns
    -------
    hubs, authorities : numpy.ndarray
        ``(n_nodes,)`` each.
    """
    n = graph.n_nodes
    m = _weighted_adjacency(graph, _edge_weights(graph, weight))  # m = Aᵀ
    gram = spla.LinearOperator((n, n), matvec=lambda x: m @ (m.T @ x), dtype=np.float64)
    start = np.random.default_rng(0).uniform(0.5, 1.5, n)
    _, vectors = spla.eigsh(gram, k=1, which="LA", v0=start, ncv=min(n, 20), tol=tol, maxiter=max_iter)
    authorities = vectors[:, 0]
    hubs = m.T @ authorities
    return hubs / hubs.sum(), authorities / authorities.sum()


def eigenvector_centrality(
    graph: NeuronGraph, iterations: int | None = None, weight: str | None = "value"
) -> np.ndarray:
    """What networkx's eigenvector centrality tends to on a DAG, or its ``k``-th iterate.

    On a DAG the adjacency is nilpotent: every eigenvalue is 0 and there is no Perron vector.
    :func:`networkx.eigenvector_centrality` (the notebook's ``eigen_cent``) iterates
    ``x <- (x + Aᵀx) / ||x + Aᵀx||`` from ``x = 1/n``, i.e. ``x_k ∝ (I + Aᵀ)^k 1 =
    sum_j C(k, j) (Aᵀ)^j 1``. On small DAGs it raises ``PowerIterationFailedConvergence``; on
    larger ones its stopping rule (an L1 change below ``n · 1e-6``) may end the slow, algebraic
    convergence early and return an iterate, not an eigenvector (``DigitsCNN``: iterate 64,
    1e-3 from the limit). As ``k`` grows
    the term of the highest power ``D`` with ``(Aᵀ)^D 1 != 0`` (the longest path, in edges)
    dominates, so the iterate tends to ``(Aᵀ)^D 1 / ||(Aᵀ)^D 1||``: at each node, the sum over
    the paths of ``D`` edges ending there of the products of their weights. That is the
    weight-only network's response to an all-ones input (no biases, no activations), kept only
    on the paths of maximal length: for a chain of layers, ``W_D ... W_1 1`` on the output layer
    and zero everywhere else. This function computes that limit directly (``D`` sparse sweeps),
    or networkx's iterate for a given number of iterations.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    iterations : int, optional
        ``None``: the limit described above. ``k``: networkx's ``k``-th iterate exactly.
    weight : {"value", "abs", None}
        Edge values.

    Returns
    -------
    numpy.ndarray
        ``(n_nodes,)``, unit Euclidean norm.
    """
    m = _weighted_adjacency(graph, _edge_weights(graph, weight))
    if iterations is None:
        x = np.ones(graph.n_nodes)
        for _ in range(len(graph.layout)):  # a path visits each layer at most once
            following = m @ x
            if not following.any():
                break
            x = following
        return x / np.linalg.norm(x)
    x = np.full(graph.n_nodes, 1.0 / graph.n_nodes)
    for _ in range(iterations):
        x = x + m @ x
        x /= np.linalg.norm(x) or 1.0
    return x


# ---------------------------------------------------------------------------------------------
# The directed Laplacian (Chung 2005)


class _DirectedLaplacian(spla.LinearOperator):
    """``I - (Q + Qᵀ)/2`` with ``Q = Φ^{1/2} P Φ^{-1/2}``, ``P`` the teleporting walk."""

    def __init__(self, transition: sp.csr_array, dangling: np.ndarray, stationary: np.ndarray, alpha: float):
        n = len(stationary)
        super().__init__(np.float64, (n, n))
        self.transition = transition  # [v, u] = w_uv / out(u): Pwalkᵀ
        self.dangling = dangling.astype(np.float64)
        self.sqrt_pi = np.sqrt(np.abs(stationary))
        self.alpha = alpha

    def _walk(self, x: np.ndarray) -> np.ndarray:
        """``P x``: one step of the teleporting walk applied to a column."""
        n = self.shape[0]
        total = x.sum(axis=0)
        dangling = self.dangling.reshape(-1, *([1] * (x.ndim - 1)))
        return self.alpha * (self.transition.T @ x + dangling * total / n) + (1 - self.alpha) / n * total

    def _walk_transposed(self, y: np.ndarray) -> np.ndarray:
        """``Pᵀ y``."""
        n = self.shape[0]
        dangling_mass = self.dangling @ y
        return self.alpha * (self.transition @ y + dangling_mass / n) + (1 - self.alpha) / n * y.sum(axis=0)

    def _matmat(self, x: np.ndarray) -> np.ndarray:
        s = self.sqrt_pi[:, None]
        q = s * self._walk(x / s)
        q_transposed = self._walk_transposed(s * x) / s
        return x - (q + q_transposed) / 2

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).ravel()

    def _adjoint(self) -> _DirectedLaplacian:
        return self


def directed_laplacian(
    graph: NeuronGraph, walk_type: str = "pagerank", alpha: float = 0.95, weight: str | None = "value"
) -> spla.LinearOperator:
    """Chung's directed Laplacian as a sparse-plus-low-rank linear operator.

    ``L = I - (Φ^{1/2} P Φ^{-1/2} + Φ^{-1/2} Pᵀ Φ^{1/2}) / 2`` (Chung 2005), with ``P`` the
    random walk with teleportation ``alpha P_walk + (1 - alpha) J / n`` (dangling rows of
    ``P_walk`` uniform) and ``Φ`` the diagonal of its stationary distribution, as
    :func:`networkx.directed_laplacian_matrix` with ``walk_type="pagerank"``. networkx builds ``P``,
    ``Q`` and ``L`` densely: four ``n × n`` float64 matrices, 4 × 22.7 GB on the notebook's
    53,290-node network. Here ``P`` is the CSR plus two rank-one terms and the stationary
    distribution is the exact PageRank (:func:`pagerank`), so applying ``L`` costs one pass
    over the edges each way.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    walk_type : {"pagerank"}
        The walk; ``"random"`` and ``"lazy"`` need a strongly connected graph, which a DAG is not.
    alpha : float
        Probability of following an edge (``1 - alpha`` teleports), in ``(0, 1)``.
    weight : {"value", "abs", None}
        Edge values; they must be non-negative.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        Symmetric ``(n_nodes, n_nodes)`` operator.

    References
    ----------
    F. Chung, "Laplacians and the Cheeger inequality for directed graphs", Annals of
    Combinatorics 9 (2005) 1-19.
    """
    if walk_type != "pagerank":
        raise ValueError(
            f"walk_type {walk_type!r}: a DAG is not strongly connected, so only 'pagerank' "
            "(the random walk with teleportation) has a stationary distribution"
        )
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = _nonnegative_weights(graph, weight, "the directed Laplacian")
    transition, dangling = _transition_weights(graph, values)
    stationary = pagerank(graph, alpha=alpha, weight=weight)
    return _DirectedLaplacian(_weighted_adjacency(graph, transition), dangling, stationary, alpha)


def directed_laplacian_eigenvalues(
    graph: NeuronGraph,
    k: int = 6,
    walk_type: str = "pagerank",
    alpha: float = 0.95,
    weight: str | None = "value",
    tol: float = 1e-10,
) -> np.ndarray:
    """The ``k`` lowest eigenvalues of :func:`directed_laplacian`, ascending.

    Lanczos (:func:`scipy.sparse.linalg.eigsh`, ``which="SA"``) on the operator, from a fixed
    start vector. The lowest is 0 (eigenvector ``Φ^{1/2} 1``).

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    k : int
        Number of eigenvalues, less than the number of nodes.
    walk_type, alpha, weight
        As in :func:`directed_laplacian`.
    tol : float
        Lanczos' relative accuracy.

    Returns
    -------
    numpy.ndarray
        ``(k,)`` eigenvalues.
    """
    if not 0 < k < graph.n_nodes:
        raise ValueError(f"k must be between 1 and n_nodes - 1 = {graph.n_nodes - 1}, got {k}")
    operator = directed_laplacian(graph, walk_type=walk_type, alpha=alpha, weight=weight)
    start = np.random.default_rng(0).standard_normal(graph.n_nodes)
    values = spla.eigsh(operator, k=k, which="SA", v0=start, tol=tol, return_eigenvectors=False)
    return np.sort(values)


# ---------------------------------------------------------------------------------------------
# Paths


def _best_paths(
    graph: NeuronGraph, values: np.ndarray, restart: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-sum dynamic programme in node order.

    Returns the best sum ``best[v]`` of a path ending at ``v``, the predecessor ``via[v]`` on it
    (``-1``: the path starts at ``v``) and the in-edge ``edge[v]`` taken. Without ``restart``,
    paths start in layer 0 (``-inf`` where none reaches); with ``restart``, networkx's
    ``dag_longest_path`` rule: a path may start anywhere and restarts where every extension is
    negative.
    """
    layout = graph.layout
    n = graph.n_nodes
    best = np.zeros(n) if restart else np.full(n, -np.inf)
    best[: layout.offsets[1]] = 0.0
    via = np.full(n, -1, dtype=np.int64)
    edge = np.full(n, -1, dtype=np.int64)
    for layer in range(1, len(layout)):
        start, stop = (int(o) for o in layout.offsets[layer : layer + 2])
        lo = int(graph.indptr[start])
        hi = int(graph.indptr[stop])
        parents = graph.indices[lo:hi]
        extreme, position = _segment_extreme(
            best[parents] + values[lo:hi], graph.indptr[start : stop + 1] - lo
        )
        extend = extreme >= 0 if restart else position >= 0
        rows = np.flatnonzero(extend)
        best[start + rows] = extreme[rows]
        via[start + rows] = parents[position[rows]]
        edge[start + rows] = lo + position[rows]
    return best, via, edge


def _trace_back(via: np.ndarray, end: int) -> np.ndarray:
    path = [end]
    while via[path[-1]] >= 0:
        path.append(int(via[path[-1]]))
    return np.array(path[::-1], dtype=np.int64)


def _input_output_path(graph: NeuronGraph, values: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Best input→output path for edge values ``values``: its nodes and the in-edges it takes."""
    best, via, edge = _best_paths(graph, values, restart=False)
    output = graph.layout.slice(len(graph.layout) - 1)
    scores = best[output]
    if not np.any(scores > -np.inf):
        raise ValueError(
            f"{what}: no path from layer 0 ({graph.layout.names[0]!r}) with a finite score reaches "
            f"the last layer ({graph.layout.names[-1]!r})"
        )
    path = _trace_back(via, output.start + int(np.argmax(scores)))
    return path, edge[path[1:]]


def longest_path(graph: NeuronGraph, weight: str | None = "value") -> tuple[np.ndarray, float]:
    """The maximum-weight path from the input layer (layer 0) to the output layer (the last).

    A dynamic programme in node order (topological), vectorised per layer with a segment
    maximum over each node's in-edges. Unlike :func:`networkx.dag_longest_path` (see
    :func:`dag_longest_path_networkx`), the path always runs from an input to an output neuron,
    whatever the signs of the weights. Ties go to the smallest node id.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    weight : {"value", "abs", None}
        Edge values (``None``: the longest path in edges).

    Returns
    -------
    nodes : numpy.ndarray
        Node ids along the path, input first.
    total : float
        Sum of the edge values along it.
    """
    values = _edge_weights(graph, weight)
    path, edges = _input_output_path(graph, values, "longest_path")
    return path, float(values[edges].sum())


def strongest_path(graph: NeuronGraph, weight: str | None = "value") -> tuple[np.ndarray, float]:
    """The input→output path with the largest product of absolute edge weights.

    The longest path for the values ``log |w|`` (zero weights block a path).

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    weight : {"value", "abs", None}
        Edge values (their absolute values are used).

    Returns
    -------
    nodes : numpy.ndarray
        Node ids along the path, input first.
    product : float
        Product of the absolute edge values along it.
    """
    magnitudes = np.abs(_edge_weights(graph, weight))
    with np.errstate(divide="ignore"):
        logs = np.log(magnitudes)
    path, edges = _input_output_path(graph, logs, "strongest_path")
    return path, float(np.prod(magnitudes[edges]))


def dag_longest_path_networkx(graph: NeuronGraph, weight: str | None = "value") -> tuple[np.ndarray, float]:
    """The path :func:`networkx.dag_longest_path` returns, computed on the CSR.

    networkx keeps, at each node, the best extension of a predecessor's path only if its sum is
    non-negative, and otherwise starts a new path at the node (``(0, v)``); it then returns the
    best path ending anywhere. With non-negative weights that is a longest path of the DAG; with
    mixed-sign weights (real networks) it is a *segment* that may start and end in the middle of
    the network, not an input→output path: use :func:`longest_path` for those. Ties go to the
    smallest node id (networkx: its topological order, the same on generic weights).

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    weight : {"value", "abs", None}
        Edge values.

    Returns
    -------
    nodes : numpy.ndarray
        Node ids along the path.
    total : float
        Sum of the edge values along it (``networkx.dag_longest_path_length``).
    """
    values = _edge_weights(graph, weight)
    best, via, edge = _best_paths(graph, values, restart=True)
    path = _trace_back(via, int(np.argmax(best)))
    return path, float(values[edge[path[1:]]].sum())


def hop_distances(graph: NeuronGraph, sources: int | np.ndarray) -> np.ndarray:
    """Number of edges on the shortest directed path from any of ``sources`` to every node.

    Breadth-first search as a dynamic programme over the layers (a segment minimum over each
    node's in-edges), as :func:`networkx.single_source_shortest_path_length` (one source) or
    ``networkx.multi_source_dijkstra_path_length`` with unit weights.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    sources : int or array_like of int
        Source node ids.

    Returns
    -------
    numpy.ndarray
        ``(n_nodes,)`` int64 hop counts, ``-1`` where no source reaches.
    """
    sources = np.atleast_1d(np.asarray(sources, dtype=np.int64))
    n = graph.n_nodes
    if sources.size == 0 or sources.min() < 0 or sources.max() >= n:
        raise ValueError(f"sources must be a non-empty set of node ids in [0, {n}), got {sources}")
    layout = graph.layout
    hops = np.full(n, np.inf)
    hops[sources] = 0.0
    for layer in range(int(layout.layer_of_node(sources.min())) + 1, len(layout)):
        start, stop = (int(o) for o in layout.offsets[layer : layer + 2])
        lo = int(graph.indptr[start])
        hi = int(graph.indptr[stop])
        nearest, _ = _segment_extreme(
            hops[graph.indices[lo:hi]] + 1.0, graph.indptr[start : stop + 1] - lo, maximum=False
        )
        hops[start:stop] = np.minimum(hops[start:stop], nearest)
    return np.where(np.isfinite(hops), hops, -1).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Products of consecutive linear maps


def jacobian_block(
    graph: NeuronGraph, source: int | str, target: int | str, weight: str | None = "value"
) -> sp.csr_array:
    """Sum over all paths from one layer to another of the products of their edge weights.

    The notebook's ``W0 @ W1`` (the product of two consecutive dense layers) generalised to any
    two layers and any operations in between, skip connections included: with ``local`` weights
    (:mod:`nsp_pipeline.graph.weights`) it is the Jacobian ``∂target/∂source`` at the graph's
    input; with ``structural`` weights the linear part of the network with activations taken as
    identities. Computed by propagating a sparse identity through the layers in between
    (``J_L = M_L J``, ``M_L`` a layer's in-edges), never touching other layers.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    source, target : int or str
        Layers by index or name; ``source`` not after ``target``.
    weight : {"value", "abs", None}
        Edge values.

    Returns
    -------
    scipy.sparse.csr_array
        ``(source size, target size)``: entry ``[s, t]`` = sum over the paths ``s -> ... -> t``
        of the product of their weights (rows are sources, as :func:`adjacency_block`).
    """
    layout = graph.layout
    first, last = layout.index(source), layout.index(target)
    if first > last:
        raise ValueError(
            f"source layer {layout.names[first]!r} ({first}) comes after target layer "
            f"{layout.names[last]!r} ({last}): paths run forward"
        )
    values = _edge_weights(graph, weight)
    offset = int(layout.offsets[first])
    blocks = [sp.eye_array(layout.layers[first].size, format="csr")]  # ∂(layer)/∂(source), per layer
    for layer in range(first + 1, last + 1):
        in_edges = _layer_in_edges(graph, layer, values)[:, offset:]
        blocks.append((in_edges @ sp.vstack(blocks, format="csr")).tocsr())
    return blocks[-1].T.tocsr()


# ---------------------------------------------------------------------------------------------
# Export


def write_graphml(graph: NeuronGraph, path, max_edges: int = GRAPHML_MAX_EDGES) -> None:
    """Write the graph as GraphML (via networkx) for other tools (Gephi, Cytoscape, yEd).

    Node keys are global node ids as strings (``"0"``, ``"1"``, ...) with the attributes
    ``layer`` (layer name) and ``label`` (nsp's key ``(layer, *index)``); edges carry ``weight``
    on a weighted graph. networkx holds every edge as a Python dictionary, so larger graphs are
    refused.

    Parameters
    ----------
    graph : NeuronGraph
        The neuron graph.
    path : str or os.PathLike
        Output file.
    max_edges : int
        Largest number of edges written.
    """
    if graph.n_edges > max_edges:
        raise ValueError(
            f"write_graphml: the graph has {graph.n_edges:,} edges and {graph.n_nodes:,} nodes, more "
            f"than max_edges={max_edges:,}; networkx needs about 1 KB of memory per edge for GraphML. "
            "Pass a larger max_edges to write it anyway, or export layer blocks (adjacency_block)."
        )
    import networkx as nx

    digraph = graph.to_networkx()
    if graph.weight_kind is not None:
        digraph.graph["weight_kind"] = graph.weight_kind
    keys = [graph.node_label(v) for v in range(graph.n_nodes)]
    digraph = nx.relabel_nodes(digraph, {key: str(v) for v, key in enumerate(keys)}, copy=True)
    names = graph.layout.names
    for v, key in enumerate(keys):
        digraph.nodes[str(v)].update(layer=names[key[0]], label=str(key))
    nx.write_graphml(digraph, path)
