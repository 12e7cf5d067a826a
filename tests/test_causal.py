"""The causal transform against a brute-force dense closure, and its identities."""

import numpy as np
import pytest
import scipy.linalg
import torch
from oracles import assert_close_to_scale, dense_zeta
from torch import nn

from nsp_pipeline.graph.build import build_graph
from nsp_pipeline.transforms.causal.closure import causal_operator


def networks():
    torch.manual_seed(3)
    mnist_like = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 2), nn.Flatten(), nn.Linear(36, 6)
    )
    strided = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.Tanh(),
        nn.Conv2d(4, 2, 1),
    )
    one_d = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.MaxPool1d(2, ceil_mode=True), nn.Sigmoid())
    return [
        ("mnist_like", mnist_like, (1, 1, 10, 10), "children"),
        ("strided", strided, (1, 2, 9, 9), "children"),
        ("one_d", one_d, (1, 2, 11), "ops"),
    ]


@pytest.mark.parametrize("incl", [True, False])
@pytest.mark.parametrize(("name", "model", "shape", "granularity"), networks(), ids=lambda p: str(p))
def test_spectrum_matches_dense_oracle(name, model, shape, granularity, incl):
    torch.manual_seed(4)
    example = torch.randn(shape)
    graph = build_graph(model, example, granularity, incl=incl)
    assert graph.n_nodes <= 2000
    operator = causal_operator(graph)
    zeta = dense_zeta(graph)
    np.testing.assert_array_equal(operator.zeta().toarray().astype(bool), zeta)

    signals = np.random.default_rng(0).normal(size=(5, graph.n_nodes))
    expected = scipy.linalg.solve_triangular(zeta.astype(float), signals.T, lower=True, unit_diagonal=True).T
    spectrum = operator.forward(signals)
    assert_close_to_scale(spectrum, expected, zeta)
    # Round trip s = Z ŝ, to the scale of the sum that rebuilds each node.
    scale = np.abs(spectrum) @ zeta.T.astype(float)
    assert np.all(np.abs(operator.inverse(spectrum) - signals) <= 1e-9 * scale)


def test_residual_network_ops(small_resnet):
    example = torch.randn(1, 1, 8, 8)
    for incl in (True, False):
        graph = build_graph(small_resnet, example, "ops", incl=incl)
        operator = causal_operator(graph)
        zeta = dense_zeta(graph)
        signal = np.random.default_rng(1).normal(size=(2, graph.n_nodes))
        expected = scipy.linalg.solve_triangular(zeta.astype(float), signal.T, lower=True, unit_diagonal=True)
        assert_close_to_scale(operator.forward(signal), expected.T, zeta)


def test_identities(small_resnet):
    """s = Z ŝ; input nodes have no ancestors (ŝ = s); a unit spectrum spreads to descendants."""
    graph = build_graph(small_resnet, torch.randn(1, 1, 8, 8), "ops")
    operator = causal_operator(graph)
    signal = np.random.default_rng(2).normal(size=(3, graph.n_nodes))
    spectrum = operator.forward(signal)
    inputs = graph.layout.slice(0)
    np.testing.assert_array_equal(spectrum[:, inputs], signal[:, inputs])
    np.testing.assert_allclose(operator.inverse(spectrum), signal, rtol=0, atol=1e-9 * np.abs(signal).max())

    # A delta on one input node: s = Z e_u is 1 exactly on u and its descendants.
    delta = np.zeros((1, graph.n_nodes))
    delta[0, 5] = 1.0
    zeta = dense_zeta(graph)
    np.testing.assert_array_equal(operator.inverse(delta)[0], zeta[:, 5].astype(float))
    # Batch and single-sample results agree exactly.
    np.testing.assert_array_equal(operator.forward(signal[1:2]), spectrum[1:2])


def test_linear_rows_are_shared():
    """All outputs of a Linear on a flat input have one ancestor set, stored once."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(18, 7))
    graph = build_graph(model, torch.randn(1, 1, 5, 5))
    operator = causal_operator(graph)
    linear_rows = operator.row_map[graph.layout.slice(3)]
    assert len(set(linear_rows.tolist())) == 1
    assert operator.n_closure_entries == int(dense_zeta(graph).sum()) - graph.n_nodes
