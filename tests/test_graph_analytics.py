"""Analytics on the neuron graph's CSR, each checked against networkx or a dense brute force."""

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.graph import analytics
from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.graph.neuron_graph import NeuronGraph
from nsp_pipeline.model.architectures import DigitsCNN


def random_dag(seed, sizes=(3, 4, 3, 2), p=0.5, skip=True, signed=True):
    """Random layered DAG: each node reads a random subset of earlier nodes (all earlier layers
    with ``skip``, else the previous layer), weights uniform in (-1, 1) or (0.1, 1)."""
    rng = np.random.default_rng(seed)
    layers = [Layer("input", (sizes[0],), "input")]
    layers += [Layer(f"layer{i}", (size,), "Linear", parents=(i - 1,)) for i, size in enumerate(sizes) if i]
    layout = Layout(tuple(layers))
    indptr, indices = [0] * (sizes[0] + 1), []
    for i in range(1, len(sizes)):
        candidates = np.arange(0 if skip else layout.offsets[i - 1], layout.offsets[i])
        for _ in range(sizes[i]):
            chosen = candidates[rng.random(len(candidates)) < p]
            indices += sorted(chosen.tolist()) if chosen.size else [int(rng.choice(candidates))]
            indptr.append(len(indices))
    graph = NeuronGraph(layout, np.array(indptr), np.array(indices))
    weights = rng.uniform(-1, 1, graph.n_edges) if signed else rng.uniform(0.1, 1, graph.n_edges)
    return graph.with_weights(weights, "structural")


def network_graph(model, example, granularity, signed, seed=0):
    """A real network's graph with random weights."""
    graph = build_graph(model, example, granularity=granularity)
    rng = np.random.default_rng(seed)
    weights = rng.uniform(-1, 1, graph.n_edges) if signed else rng.uniform(0.1, 1, graph.n_edges)
    return graph.with_weights(weights, "structural")


@pytest.fixture(scope="module")
def digits_signed():
    torch.manual_seed(0)
    return network_graph(DigitsCNN(), torch.zeros(1, 1, 8, 8), "merged", signed=True)


@pytest.fixture(scope="module")
def digits_positive():
    torch.manual_seed(0)
    return network_graph(DigitsCNN(), torch.zeros(1, 1, 8, 8), "merged", signed=False)


@pytest.fixture(scope="module")
def resnet_positive():
    from conftest import SmallResNet

    torch.manual_seed(1)
    return network_graph(SmallResNet(), torch.zeros(1, 1, 8, 8), "ops", signed=False, seed=1)


def keys_of(graph):
    return [graph.node_label(v) for v in range(graph.n_nodes)]


def as_vector(graph, values_by_key):
    """networkx's ``{node key: value}`` as an array in node order."""
    return np.array([values_by_key[key] for key in keys_of(graph)])


def dense_adjacency(graph):
    """networkx's dense adjacency in node order: ``[u, v]`` = weight of ``u -> v``."""
    return nx.to_numpy_array(graph.to_networkx(), nodelist=keys_of(graph), weight="weight")


def node_ids(graph, path_keys):
    index = {key: v for v, key in enumerate(keys_of(graph))}
    return [index[key] for key in path_keys]


def all_input_output_paths(graph):
    """Every path from layer 0 to the last layer, by networkx, as node-id lists."""
    digraph = graph.to_networkx()
    keys = keys_of(graph)
    outputs = [keys[v] for v in range(*graph.layout.offsets[-2:])]
    inputs = [keys[v] for v in range(*graph.layout.offsets[:2])]
    return [node_ids(graph, p) for source in inputs for p in nx.all_simple_paths(digraph, source, outputs)]


def chain(weights):
    """One neuron per layer, ``input -> layer1 -> ...`` with the given edge weights."""
    layers = [Layer("input", (1,), "input")]
    layers += [Layer(f"layer{i}", (1,), "Linear", parents=(i - 1,)) for i in range(1, len(weights) + 1)]
    graph = NeuronGraph(Layout(tuple(layers)), np.r_[0, 0 : len(weights) + 1], np.arange(len(weights)))
    return graph.with_weights(np.array(weights, dtype=float), "structural")


# ---------------------------------------------------------------------------------------------
# Counts and blocks


@pytest.mark.parametrize("make", [lambda: random_dag(0), lambda: random_dag(1, (4, 5, 3, 4, 2), skip=False)])
def test_layer_edge_counts_and_density_match_networkx(make):
    graph = make()
    digraph = graph.to_networkx()
    expected = np.zeros((len(graph.layout),) * 2, dtype=int)
    for u, v in digraph.edges:
        expected[u[0], v[0]] += 1
    np.testing.assert_array_equal(analytics.layer_edge_counts(graph), expected)
    assert analytics.density(graph) == nx.density(digraph)


def test_adjacency_block_matches_networkx_slices(digits_signed):
    graph = digits_signed
    dense = dense_adjacency(graph)
    offsets = graph.layout.offsets
    for source, target in [(0, 1), ("conv2", "pool2"), (2, 4), (3, 1)]:
        s, t = graph.layout.index(source), graph.layout.index(target)
        block = analytics.adjacency_block(graph, source, target)
        assert block.shape == (graph.layout.layers[s].size, graph.layout.layers[t].size)
        np.testing.assert_array_equal(
            block.toarray(), dense[offsets[s] : offsets[s + 1], offsets[t] : offsets[t + 1]]
        )
    # runs of layers, as the notebook's 3,392 × 1,098 block
    block = analytics.adjacency_block(graph, ("conv2", "pool2"), (4, "fc"))
    np.testing.assert_array_equal(block.toarray(), dense[offsets[3] : offsets[5], offsets[4] : offsets[6]])
    unweighted = analytics.adjacency_block(graph, "pool2", "fc", weight=None).toarray()
    np.testing.assert_array_equal(unweighted, dense[offsets[4] : offsets[5], offsets[5] :] != 0)
    with pytest.raises(ValueError, match="'fc' comes after 'pool2'"):
        analytics.adjacency_block(graph, ("fc", "pool2"), 1)
    with pytest.raises(KeyError, match="no layer named 'conv9'"):
        analytics.adjacency_block(graph, "conv9", 1)


# ---------------------------------------------------------------------------------------------
# Centralities


@pytest.mark.parametrize("alpha", [0.1, 0.9, 3.0])
@pytest.mark.parametrize("normalized", [True, False])
def test_katz_matches_networkx(alpha, normalized):
    graph = random_dag(2, (3, 4, 4, 2))
    digraph = graph.to_networkx()
    expected = nx.katz_centrality(
        digraph, alpha=alpha, beta=0.5, weight="weight", normalized=normalized, tol=1e-15, max_iter=100
    )
    got = analytics.katz_centrality(graph, alpha=alpha, beta=0.5, normalized=normalized)
    np.testing.assert_allclose(got, as_vector(graph, expected), rtol=1e-12, atol=1e-14)
    # katz_centrality_numpy solves (I - alpha Aᵀ) x = beta densely; it normalises with the sign of the sum
    solved = as_vector(
        graph, nx.katz_centrality_numpy(digraph, alpha, 0.5, normalized=False, weight="weight")
    )
    unnormalized = analytics.katz_centrality(graph, alpha=alpha, beta=0.5, normalized=False)
    np.testing.assert_allclose(unnormalized, solved, rtol=1e-10, atol=1e-12)


def test_katz_on_a_network_with_beta_per_node(digits_signed):
    graph = digits_signed
    beta = np.random.default_rng(3).uniform(0.5, 1.5, graph.n_nodes)
    expected = nx.katz_centrality(
        graph.to_networkx(), alpha=0.2, beta=dict(zip(keys_of(graph), beta)), weight="weight", tol=1e-14
    )
    np.testing.assert_allclose(
        analytics.katz_centrality(graph, alpha=0.2, beta=beta), as_vector(graph, expected), rtol=1e-10
    )


@pytest.mark.parametrize("weight", ["value", None])
def test_pagerank_matches_networkx(weight, digits_positive, resnet_positive):
    for graph in (random_dag(4, signed=False), digits_positive, resnet_positive):
        expected = nx.pagerank(
            graph.to_networkx(), alpha=0.85, tol=1e-15, max_iter=1000, weight="weight" if weight else None
        )
        got = analytics.pagerank(graph, alpha=0.85, weight=weight)
        np.testing.assert_allclose(got, as_vector(graph, expected), rtol=1e-10)


def test_pagerank_refuses_negative_weights(digits_signed):
    with pytest.raises(ValueError, match=r"non-negative edge weights.*weight='abs'"):
        analytics.pagerank(digits_signed)
    abs_graph = digits_signed.with_weights(np.abs(digits_signed.weights), "structural")
    np.testing.assert_array_equal(
        analytics.pagerank(digits_signed, weight="abs"), analytics.pagerank(abs_graph)
    )


def test_hits_matches_networkx(digits_positive):
    for graph in (random_dag(5, (4, 5, 4, 3), signed=False), digits_positive):
        singular = np.linalg.svd(dense_adjacency(graph), compute_uv=False)
        assert singular[0] - singular[1] > 1e-3 * singular[0]  # a unique top singular pair
        hubs, authorities = nx.hits(graph.to_networkx(), max_iter=10000, tol=1e-12)
        got_hubs, got_authorities = analytics.hits(graph)
        np.testing.assert_allclose(got_hubs, as_vector(graph, hubs), rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(got_authorities, as_vector(graph, authorities), rtol=1e-7, atol=1e-12)


def networkx_eigenvector_iterate(adjacency, iterations):
    """networkx's eigenvector_centrality update, densely: x <- (x + Aᵀx) / ||x + Aᵀx||, x0 = 1/n."""
    x = np.full(len(adjacency), 1.0 / len(adjacency))
    for _ in range(iterations):
        x = x + adjacency.T @ x
        x /= math.hypot(*x) or 1
    return x


def test_networkx_eigenvector_centrality_on_a_dag_fails_or_stops_at_an_iterate(digits_positive):
    with pytest.raises(nx.PowerIterationFailedConvergence):
        nx.eigenvector_centrality(random_dag(6, signed=False).to_networkx(), weight="weight")
    # on a larger DAG its tolerance (n · 1e-6 in L1) stops the slow algebraic convergence early:
    # what it returns is one of its iterates, near the limit but not at it
    graph = digits_positive
    returned = as_vector(graph, nx.eigenvector_centrality(graph.to_networkx(), weight="weight"))
    iterates = [analytics.eigenvector_centrality(graph, iterations=k) for k in range(1, 101)]
    closest = iterates[int(np.argmin([np.abs(x - returned).max() for x in iterates]))]
    np.testing.assert_allclose(closest, returned, rtol=1e-12, atol=1e-15)
    assert 1e-5 < np.abs(returned - analytics.eigenvector_centrality(graph)).max() < 1e-2


@pytest.mark.parametrize("iterations", [1, 3, 25])
def test_eigenvector_iterate_is_networkx_iterate(iterations):
    signed = random_dag(7)
    np.testing.assert_allclose(
        analytics.eigenvector_centrality(signed, iterations=iterations),
        networkx_eigenvector_iterate(dense_adjacency(signed), iterations),
        rtol=1e-12,
        atol=1e-15,
    )
    # networkx itself, one iteration per call restarting from its own output (positive weights:
    # each restart divides by a positive sum, so the iterate is unchanged up to scale)
    positive = random_dag(7, signed=False)
    digraph = positive.to_networkx()
    x = dict.fromkeys(digraph, 1.0)
    for _ in range(iterations):
        x = nx.eigenvector_centrality(digraph, max_iter=1, tol=1e9, nstart=x, weight="weight")
    np.testing.assert_allclose(
        analytics.eigenvector_centrality(positive, iterations=iterations), as_vector(positive, x), rtol=1e-12
    )


def test_eigenvector_limit_is_the_longest_paths_response(digits_signed):
    for graph in (random_dag(8), random_dag(9, (3, 3, 3, 3), skip=False), digits_signed):
        adjacency = dense_adjacency(graph)
        depth = nx.dag_longest_path_length(graph.to_networkx(), weight=None)  # in edges
        response = np.linalg.matrix_power(adjacency.T, depth) @ np.ones(graph.n_nodes)
        limit = analytics.eigenvector_centrality(graph)
        np.testing.assert_allclose(limit, response / np.linalg.norm(response), rtol=1e-10, atol=1e-14)
    # networkx's iterate tends to it (algebraically, ~depth/k)
    graph = random_dag(8)
    limit = analytics.eigenvector_centrality(graph)
    near, far = (
        np.abs(networkx_eigenvector_iterate(dense_adjacency(graph), k) - limit).max() for k in (1000, 10000)
    )
    assert far < 0.2 * near and far < 1e-2


# ---------------------------------------------------------------------------------------------
# The directed Laplacian


@pytest.mark.parametrize("alpha", [0.95, 0.5])
def test_directed_laplacian_matches_networkx(alpha, digits_positive, resnet_positive):
    rng = np.random.default_rng(10)
    for graph in (random_dag(10, (4, 5, 4, 3), signed=False), digits_positive, resnet_positive):
        dense = nx.directed_laplacian_matrix(
            graph.to_networkx(), nodelist=keys_of(graph), walk_type="pagerank", alpha=alpha
        )
        operator = analytics.directed_laplacian(graph, alpha=alpha)
        vectors = rng.standard_normal((graph.n_nodes, 3))
        np.testing.assert_allclose(operator @ vectors, dense @ vectors, atol=1e-9)
        np.testing.assert_allclose(operator.matvec(vectors[:, 0]), dense @ vectors[:, 0], atol=1e-9)
        expected = np.linalg.eigvalsh(dense)[:4]
        got = analytics.directed_laplacian_eigenvalues(graph, k=4, alpha=alpha)
        np.testing.assert_allclose(got, expected, atol=1e-8)


def test_directed_laplacian_refuses_walks_without_a_stationary_distribution():
    with pytest.raises(ValueError, match="not strongly connected"):
        analytics.directed_laplacian(random_dag(0, signed=False), walk_type="random")


# ---------------------------------------------------------------------------------------------
# Paths


@pytest.mark.parametrize("seed", range(6))
def test_longest_and_strongest_paths_by_brute_force(seed):
    graph = random_dag(seed, (3, 3, 3, 2), p=0.6)
    weights = dense_adjacency(graph)
    paths = all_input_output_paths(graph)
    sums = [sum(weights[u, v] for u, v in itertools.pairwise(p)) for p in paths]
    products = [math.prod(abs(weights[u, v]) for u, v in itertools.pairwise(p)) for p in paths]
    path, total = analytics.longest_path(graph)
    assert total == pytest.approx(max(sums), rel=1e-12)
    assert path.tolist() == paths[int(np.argmax(sums))]
    path, product = analytics.strongest_path(graph)
    assert product == pytest.approx(max(products), rel=1e-12)
    assert path.tolist() == paths[int(np.argmax(products))]
    _, hops = analytics.longest_path(graph, weight=None)
    assert hops == max(len(p) - 1 for p in paths)


@pytest.mark.parametrize("seed", range(6))
def test_dag_longest_path_networkx_semantics(seed, digits_signed):
    graphs = [random_dag(seed), random_dag(seed, signed=False)] + [digits_signed] * (seed == 0)
    for graph in graphs:
        digraph = graph.to_networkx()
        path, total = analytics.dag_longest_path_networkx(graph)
        assert path.tolist() == node_ids(graph, nx.dag_longest_path(digraph, weight="weight"))
        assert total == nx.dag_longest_path_length(digraph, weight="weight")


@pytest.mark.parametrize(
    ("weights", "segment", "total"), [((-5.0, 2.0, 3.0), [1, 2, 3], 0.0), ((2.0, 3.0, -4.0), [0, 1, 2], 1.0)]
)
def test_networkx_longest_path_is_a_segment_on_mixed_signs(weights, segment, total):
    graph = chain(weights)
    digraph = graph.to_networkx()
    assert node_ids(graph, nx.dag_longest_path(digraph, weight="weight")) == segment
    assert analytics.dag_longest_path_networkx(graph)[0].tolist() == segment
    path, path_total = analytics.longest_path(graph)
    assert path.tolist() == [0, 1, 2, 3]
    assert path_total == total


def test_hop_distances_match_networkx(resnet_positive):
    graph = resnet_positive
    digraph = graph.to_networkx()
    keys = keys_of(graph)
    for source in (0, 17, int(graph.layout.offsets[3]) + 5):
        expected = np.full(graph.n_nodes, -1)
        for key, hops in nx.single_source_shortest_path_length(digraph, keys[source]).items():
            expected[keys.index(key)] = hops
        np.testing.assert_array_equal(analytics.hop_distances(graph, source), expected)
    sources = [3, int(graph.layout.offsets[2]) + 1, int(graph.layout.offsets[6])]
    lengths = nx.multi_source_dijkstra_path_length(digraph, {keys[s] for s in sources}, weight=lambda *_: 1)
    expected = np.full(graph.n_nodes, -1)
    for key, hops in lengths.items():
        expected[keys.index(key)] = hops
    np.testing.assert_array_equal(analytics.hop_distances(graph, sources), expected)


# ---------------------------------------------------------------------------------------------
# Jacobian blocks


def test_jacobian_block_is_the_power_series_block(resnet_positive):
    for graph in (random_dag(11, (3, 4, 4, 3, 2)), resnet_positive):
        adjacency = dense_adjacency(graph)
        paths = np.linalg.inv(np.eye(graph.n_nodes) - adjacency)  # sum_k A^k: [s, t] over paths s -> t
        offsets = graph.layout.offsets
        for source, target in [(0, len(graph.layout) - 1), (1, 3), (2, 2)]:
            expected = paths[offsets[source] : offsets[source + 1], offsets[target] : offsets[target + 1]]
            got = analytics.jacobian_block(graph, source, target).toarray()
            np.testing.assert_allclose(got, expected, atol=1e-12)
    with pytest.raises(ValueError, match="comes after target layer"):
        analytics.jacobian_block(graph, 3, 1)


def test_jacobian_block_of_a_chain_is_the_product_of_its_blocks():
    graph = random_dag(12, (4, 5, 3, 4), skip=False)
    dense = dense_adjacency(graph)
    o = graph.layout.offsets
    product = dense[o[0] : o[1], o[1] : o[2]] @ dense[o[1] : o[2], o[2] : o[3]] @ dense[o[2] : o[3], o[3] :]
    np.testing.assert_allclose(
        analytics.jacobian_block(graph, "input", "layer3").toarray(), product, atol=1e-14
    )


def test_jacobian_block_of_a_linear_network_is_its_autograd_jacobian():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 6), nn.Linear(6, 3)).double()
    x = torch.rand(1, 4, dtype=torch.float64)
    graph = build_graph(model, x, granularity="merged")
    offsets, targets = graph.layout.offsets, np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr))
    weights = np.empty(graph.n_edges)
    for layer, module in enumerate(model, start=1):  # edge u -> v of a Linear: W[v, u]
        edges = slice(graph.indptr[offsets[layer]], graph.indptr[offsets[layer + 1]])
        matrix = module.weight.detach().numpy()
        weights[edges] = matrix[targets[edges] - offsets[layer], graph.indices[edges] - offsets[layer - 1]]
    graph = graph.with_weights(weights, "structural")
    jacobian = torch.autograd.functional.jacobian(model, x)[0, :, 0, :].numpy()  # [output, input]
    np.testing.assert_allclose(analytics.jacobian_block(graph, 0, 3).toarray(), jacobian.T, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Export


def test_graphml_round_trip(tmp_path, digits_signed):
    graph = digits_signed
    path = tmp_path / "digits.graphml"
    analytics.write_graphml(graph, path)
    read = nx.read_graphml(path)
    assert list(read.nodes) == [str(v) for v in range(graph.n_nodes)]
    assert read.nodes["40"]["layer"] == graph.layout.names[graph.node_label(40)[0]]
    assert read.nodes["40"]["label"] == str(graph.node_label(40))
    targets = np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr))
    edges = {(int(u), int(v)): data["weight"] for u, v, data in read.edges(data=True)}
    assert edges == dict(zip(zip(graph.indices.tolist(), targets.tolist()), graph.weights.tolist()))
    assert read.graph["weight_kind"] == "structural"
    with pytest.raises(ValueError, match=r"18,080 edges and 1,034 nodes, more than max_edges=1,000"):
        analytics.write_graphml(graph, path, max_edges=1000)
