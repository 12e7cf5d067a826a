"""The nsp README example runs unchanged on nsp_pipeline, with the original nsp's results.

The original library (``nsp==0.0.16`` from PyPI) is the oracle.
"""

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import nsp_pipeline as nsp

original = pytest.importorskip("nsp", reason="the original nsp (test extra) is the oracle here")


def edge_set(networkx_graph):
    return {(tuple(u), tuple(v)) for u, v in networkx_graph.edges}


class PoolNet(nn.Module):
    """Children the original handles: conv, max-pool, conv, linear after a functional view."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 2, 2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.pool(self.conv1(x)))
        x = self.conv2(x)
        return self.fc(x.view(x.size(0), -1))


def networks():
    torch.manual_seed(0)
    from conftest import SEED_IMAGE, SeedNet

    return [
        (SeedNet(), torch.tensor(SEED_IMAGE, dtype=torch.float)),
        (PoolNet(), torch.randn(1, 1, 9, 9)),
    ]


@pytest.mark.parametrize(("network", "image"), networks(), ids=["seed_example", "pool_net"])
def test_same_results_as_original(network, image, tmp_path):
    ours_activations = nsp.Activations(network, image)
    theirs_activations = original.Activations(network, image)
    assert ours_activations.layernames == theirs_activations.layernames
    assert ours_activations.layerdescriptions[0] == theirs_activations.layerdescriptions[0]
    np.testing.assert_array_equal(ours_activations.to_vector(), theirs_activations.to_vector())

    ours = nsp.NNGraph(ours_activations)
    theirs = original.NNGraph(theirs_activations)
    assert ours.nodes == list(theirs.nodes)
    assert edge_set(ours.to_networkx()) == edge_set(theirs)
    np.testing.assert_array_equal(ours.inv_F.toarray(), theirs.get_transformer("standard").toarray())

    ours_spectrum = np.array(ours.transform(ours_activations).to_vector())
    theirs_spectrum = np.array(theirs.transform(theirs_activations).to_vector())
    scale = theirs.inv_F.toarray() @ np.abs(theirs_spectrum)
    assert np.all(np.abs(ours_spectrum - theirs_spectrum) <= 1e-9 * scale)


def test_laplacian_as_original(seed_net, seed_image):
    """Same L = D - W; same spectrum up to the basis chosen inside each eigenspace.

    The original's eigendecomposition no longer runs with current SciPy (``asfptype`` was
    removed), so its method (``eigh`` of its Laplacian, then ``lu_solve``) is replayed here.
    """
    ours_activations = nsp.Activations(seed_net, seed_image)
    theirs = original.NNGraph(original.Activations(seed_net, seed_image))
    their_laplacian = original.transformer.Transformer.get_laplacian(theirs).toarray().astype(float)
    ours = nsp.NNGraph(ours_activations)
    np.testing.assert_array_equal(nsp.laplacian_matrix(ours.graph).toarray(), their_laplacian)

    eigenvalues, eigenvectors = np.linalg.eigh(their_laplacian)
    signal = np.array(ours_activations.to_vector())
    their_spectrum = scipy.linalg.lu_solve(scipy.linalg.lu_factor(eigenvectors), signal)
    spectrum = ours.transform(ours_activations, type="laplacian")
    our_spectrum = spectrum.pattern.values[0]
    np.testing.assert_allclose(spectrum.pattern.eigenvalues, eigenvalues, atol=1e-10)
    # Energy in every eigenspace is basis independent.
    groups = np.concatenate([[0], np.cumsum(np.diff(eigenvalues) > 1e-8)])
    for group in np.unique(groups):
        members = groups == group
        np.testing.assert_allclose(
            np.linalg.norm(our_spectrum[members]),
            np.linalg.norm(their_spectrum[members]),
            rtol=1e-9,
            atol=1e-9,
        )


def test_readme_four_steps(seed_net, seed_image, tmp_path):
    """The README's example verbatim, writing both PDFs (a page per layer)."""
    activations = nsp.Activations(seed_net, seed_image)
    graph = nsp.NNGraph(activations)
    spectrum = graph.transform(activations)
    nsp.Visualizer.visualize_pattern(
        activations, pdf_filepath=str(tmp_path / "activations.pdf"), scale="layernorm", cmap_style="viridis"
    )
    nsp.Visualizer.visualize_pattern(
        spectrum, pdf_filepath=str(tmp_path / "spectrum.pdf"), scale="layernorm", cmap_style="viridis"
    )
    for name in ("activations.pdf", "spectrum.pdf"):
        data = (tmp_path / name).read_bytes()
        assert data.count(b"/Type /Page") - data.count(b"/Type /Pages") == len(activations.layernames)


def test_incl_false_drops_zero_weights(seed_net, seed_image):
    with torch.no_grad():
        seed_net.conv2.weight[0, 0, 0, 0] = 0.0
    activations = nsp.Activations(seed_net, seed_image)
    full, pruned = nsp.NNGraph(activations), nsp.NNGraph(activations, INCL=False)
    # conv2 output channel 0 reads conv1 channel 0 at tap (0, 0): one edge per output position.
    assert full.number_of_edges() - pruned.number_of_edges() == 2 * 2
