"""The graph_analytics stage: summary, HDF5 file, PDF, command line and configuration.

Centralities in the files are checked against networkx on the same weighted graph; heatmaps against
a dense brute-force binning; the HDF5 file against the summary it was written from.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from cli_helpers import error_line, run
from test_cli import pdf_pages

from nsp_pipeline.analysis.analyze import graph_analytics
from nsp_pipeline.analysis.graph_summary import block_heatmap, block_pairs, summarize_graph
from nsp_pipeline.core.layout import Layer, Layout
from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.graph.weights import edge_weights
from nsp_pipeline.io import hdf5
from nsp_pipeline.io.config import validate_config
from nsp_pipeline.model.architectures import DigitsCNN
from nsp_pipeline.render.graph_plots import plot_graph_summary

CONFIG = """\
models:
  tiny:
    architecture: digits_cnn
    seed: 3
datasets:
  digits: {source: digits, split: test}
analyses:
  - {model: tiny, dataset: digits}
graph_analytics:
  weights: local
  blocks:
    tiny: [[input, 1], [1, 2]]
  class_names: [zero, one, two, three, four, five, six, seven, eight, nine]
"""


def nx_nodes(graph):
    """networkx node keys in node order."""
    return [graph.node_label(v) for v in range(graph.n_nodes)]


@pytest.fixture(scope="module")
def weighted():
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(1, 1, 8, 8)
    graph = build_graph(model, x, "merged")
    return graph.with_weights(edge_weights(model, x, graph, "structural"), "structural")


def test_heatmap_is_the_binned_mean_of_the_edges():
    rng = np.random.default_rng(1)
    dense = np.where(rng.random((37, 23)) < 0.3, rng.normal(size=(37, 23)), 0.0)
    dense[3, 4] = 0.0
    mask = dense != 0
    mask[3, 4] = True  # an edge of weight 0 still counts as an edge
    block = sp.csr_array((dense[mask], np.nonzero(mask)), shape=dense.shape)
    heatmap, bins = block_heatmap(block, side=10)
    assert bins == (4, 3)
    for i in range(heatmap.shape[0]):
        for j in range(heatmap.shape[1]):
            cell = (slice(4 * i, 4 * i + 4), slice(3 * j, 3 * j + 3))
            values = dense[cell][mask[cell]]
            expected = values.mean() if len(values) else np.nan
            np.testing.assert_allclose(heatmap[i, j], expected, rtol=1e-14, equal_nan=True)


def test_blocks_listed_are_kept_whole(weighted):
    summary = summarize_graph(weighted, {"analytics": [], "blocks": [["input", 1]]})
    (view,) = summary.blocks
    dense = weighted.adjacency().toarray()
    rows, columns = weighted.layout.slice(0), weighted.layout.slice(1)
    np.testing.assert_array_equal(view.block.toarray(), dense[columns, rows].T)  # A[v, u]: edge u -> v
    assert view.heatmap.shape == tuple(-(-s // b) for s, b in zip(view.block.shape, view.bins, strict=True))


def test_default_blocks_are_every_layer_with_its_parents(weighted):
    layout = weighted.layout
    pairs, keep = block_pairs(layout, None)
    assert not keep
    assert pairs == [(p, i) for i, layer in enumerate(layout.layers) for p in layer.parents]


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ([["nope", 1]], "no layer named 'nope'"),
        ([[2, 1]], "give the source layer first"),
        ([[0, 99]], "out of range"),
    ],
)
def test_bad_blocks_name_the_entry(weighted, blocks, message):
    with pytest.raises(ValueError, match=message) as error:
        block_pairs(weighted.layout, blocks)
    assert "graph_analytics.blocks[0]" in str(error.value)


def test_summary_centralities_match_networkx(weighted):
    summary = summarize_graph(weighted, {"analytics": ["katz", "pagerank", "hops"], "katz_alpha": 0.05})
    digraph = weighted.to_networkx()
    keys = nx_nodes(weighted)
    katz = nx.katz_centrality(digraph, alpha=0.05, weight="weight", max_iter=5000, tol=1e-12)
    np.testing.assert_allclose(summary.centralities["katz"], [katz[k] for k in keys], rtol=1e-6, atol=1e-12)
    magnitudes = weighted.with_weights(np.abs(weighted.weights), "structural").to_networkx()
    pagerank = nx.pagerank(magnitudes, alpha=0.85, weight="weight", tol=1e-13)  # a walk: weights |w|
    np.testing.assert_allclose(summary.centralities["pagerank"], [pagerank[k] for k in keys], atol=1e-8)
    inputs = [keys[v] for v in range(weighted.layout.layers[0].size)]
    hops = nx.multi_source_dijkstra_path_length(digraph, inputs, weight=lambda u, v, d: 1)
    np.testing.assert_array_equal(summary.hops, [hops.get(k, -1) for k in keys])
    assert summary.density == pytest.approx(nx.density(digraph), rel=1e-14)


def test_file_round_trip_and_pdf(weighted, tmp_path):
    settings = {"blocks": [["input", 1], [1, 2]], "laplacian_k": 3}
    summary = summarize_graph(weighted, settings)
    path = tmp_path / "summary.h5"
    hdf5.write_graph_summary(path, summary, {"model_checksum": "x"})
    back = hdf5.read_graph_summary(path)
    assert back.layout == summary.layout and back.weight_kind == "structural"
    assert back.n_edges == weighted.n_edges and back.density == summary.density
    np.testing.assert_array_equal(back.layer_edge_counts, summary.layer_edge_counts)
    assert (
        list(back.centralities)
        == list(summary.centralities)
        == ["katz", "pagerank", "hubs", "authorities", "eigenvector"]
    )
    for name, values in summary.centralities.items():
        np.testing.assert_array_equal(back.centralities[name], values)
    np.testing.assert_array_equal(back.laplacian_eigenvalues, summary.laplacian_eigenvalues)
    for name, (nodes, value) in summary.paths.items():
        np.testing.assert_array_equal(back.paths[name][0], nodes)
        assert back.paths[name][1] == value
    for got, expected in zip(back.blocks, summary.blocks, strict=True):
        assert (got.source, got.target, got.bins) == (expected.source, expected.target, expected.bins)
        np.testing.assert_array_equal(got.heatmap, expected.heatmap)
        assert (got.block != expected.block).nnz == 0
    pdf = tmp_path / "summary.pdf"
    plot_graph_summary(back, pdf, "tiny")
    # overview, 5 centralities, the output layer, paths, eigenvalues, 2 blocks
    assert pdf_pages(pdf) == 1 + 5 + 1 + 1 + 1 + 2


def test_class_names_must_match_the_output_layer(weighted, tmp_path):
    summary = summarize_graph(weighted, {"analytics": ["katz"]})
    with pytest.raises(ValueError, match="3 class names for the 10 neurons of the output layer"):
        plot_graph_summary(summary, tmp_path / "x.pdf", class_names=["a", "b", "c"])
    assert not (tmp_path / "x.pdf").exists()


def test_python_api_weights_local_reproduce_the_layers():
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(1, 1, 8, 8)
    summary = graph_analytics(model, x, weights="local", analytics=["paths"])
    assert summary.weight_kind == "local"
    assert set(summary.paths) == {"longest", "longest_networkx", "strongest"}
    nodes, _ = summary.paths["longest"]
    layers = summary.layout.layer_of_node(nodes)
    assert layers[0] == 0 and layers[-1] == len(summary.layout) - 1


def test_cli_writes_summary_and_pdf(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    model, metadata, graph = tmp_path / "m.pt", tmp_path / "m.json", tmp_path / "graph.h5"
    out, pdf = tmp_path / "summary.h5", tmp_path / "summary.pdf"
    assert (
        run("export-model", "--config", config, "--model", "tiny", "--out", model, "--metadata", metadata)
        == 0
    )
    assert run("build-graph", model, graph, "--granularity", "merged") == 0
    assert run(
        "graph-analytics", model, graph, "--out", out, "--pdf", pdf, "--config", config,
        "--dataset", "digits", "--index", 2, "--name", "tiny",
    ) == 0  # fmt: skip
    summary = hdf5.read_graph_summary(out)
    assert summary.weight_kind == "local"
    assert [(b.source, b.target) for b in summary.blocks] == [(0, 1), (1, 2)]
    assert all(b.block is not None for b in summary.blocks)
    assert pdf_pages(pdf) == 1 + 5 + 1 + 1 + 1 + 2
    # the local weights are the network's partial derivatives at digit 2: Katz of networkx on them
    from nsp_pipeline.data.loading import load_samples
    from nsp_pipeline.model.artifact import load_model

    net, _ = load_model(model)
    x = load_samples({"source": "digits", "split": "test"}, [2], (1, 8, 8)).inputs
    plain = hdf5.read_graph(graph)
    weighted = plain.with_weights(edge_weights(net, x, plain, "local"), "local")
    katz = nx.katz_centrality(weighted.to_networkx(), alpha=0.1, weight="weight", max_iter=5000, tol=1e-12)
    np.testing.assert_allclose(summary.centralities["katz"], [katz[k] for k in nx_nodes(plain)], rtol=1e-6)
    # the summary is not written over its inputs, and a bad weight kind is refused by argparse
    assert run("graph-analytics", model, graph, "--out", graph, "--pdf", pdf) == 1
    assert "graph" in error_line(capsys)


def test_config_checks_blocks_and_reference():
    base = {
        "models": {"m": {"architecture": "digits_cnn"}},
        "datasets": {"d": {"source": "digits"}},
        "analyses": [{"model": "m", "dataset": "d"}],
    }
    with pytest.raises(ValueError, match=r"graph_analytics.blocks.other.*'other' is not one of the models"):
        validate_config({**base, "graph_analytics": {"blocks": {"other": [[0, 1]]}}})
    with pytest.raises(ValueError, match=r"graph_analytics.reference.dataset.*'x' is not one of the"):
        validate_config({**base, "graph_analytics": {"reference": {"dataset": "x"}}})
    config = validate_config(base)
    assert config["graph_analytics"]["weights"] == "structural" and config["graph_analytics"]["enabled"]


def test_digits_in_three_channels():
    from nsp_pipeline.data.loading import load_samples

    gray = load_samples({"source": "digits", "size": 32}, [0, 5], (1, 32, 32)).inputs
    rgb = load_samples({"source": "digits", "size": 32, "channels": 3}, [0, 5], (3, 32, 32)).inputs
    for channel in range(3):
        torch.testing.assert_close(rgb[:, channel], gray[:, 0], rtol=0, atol=0)


def test_graph_of_a_tiny_layout_has_no_blocks_without_parents():
    layout = Layout([Layer("input", (2,), "input"), Layer("out", (2,), "linear", parents=(0,))])
    pairs, _ = block_pairs(layout, None)
    assert pairs == [(0, 1)]
