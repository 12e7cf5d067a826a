"""nsp's graph API on nsp_pipeline: NNGraph as a networkx.DiGraph, OutputLoader, lu_piv, tutorial 2.

Oracles: the original library (``nsp==0.0.16``) on the same network and input, and networkx.
"""

import os

import h5py
import networkx as nx
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import torch
import torch.nn.functional as F
from conftest import SEED_IMAGE, SeedNet
from torch import nn

import nsp_pipeline as nsp
from nsp_pipeline import legacy
from nsp_pipeline.legacy import OutputLoader, PickleNotTrustedError, Transformer

original = pytest.importorskip("nsp", reason="the original nsp (test extra) is the oracle here")


@pytest.fixture
def original_laplacian(monkeypatch):
    """Let the original's Laplacian transform run: it calls ``asfptype``, which SciPy 1.14 removed."""
    monkeypatch.setattr(
        scipy.sparse.csr_array, "asfptype", lambda matrix: matrix.astype(np.float64), raising=False
    )


class TutorialNet(nn.Module):
    """The network of nsp's tutorial 2 (``Network_mnist_1``), with given widths and input size.

    Widths (10, 20) and size 28 are the tutorial's: 9,594 neurons.
    """

    def __init__(self, channels=(10, 20), size=28):
        super().__init__()
        self.cnn1 = nn.Conv2d(1, channels[0], kernel_size=5)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2)
        self.cnn2 = nn.Conv2d(channels[0], channels[1], kernel_size=5)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(channels[1] * (((size - 4) // 2 - 4) // 2) ** 2, 10)

    def forward(self, x):
        out = self.maxpool1(F.relu(self.cnn1(x)))
        out = self.maxpool2(F.relu(self.cnn2(out)))
        return self.fc1(out.view(out.size(0), -1))


class PoolLinearNet(nn.Module):
    """Conv, max-pool, conv, linear: every layer kind the original's graph builder handles."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(2, 2, 2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.pool(self.conv1(x)))
        return self.fc(self.conv2(x).view(x.size(0), -1))


def digit_image(size=28, index=0):
    """A digit of scikit-learn's ``load_digits`` as the tutorial's MNIST input (1×1×size×size), normalised."""
    from sklearn.datasets import load_digits

    digit = torch.as_tensor(load_digits().images[index] / 16.0, dtype=torch.float32)[None, None]
    image = F.interpolate(digit, size=(size, size), mode="bilinear", align_corners=False)
    return (image - 0.1307) / 0.3081  # the tutorial's torchvision.transforms.Normalize


def networks():
    torch.manual_seed(0)
    return [
        (SeedNet(), torch.tensor(SEED_IMAGE, dtype=torch.float)),
        (PoolLinearNet(), torch.randn(1, 1, 9, 9)),
    ]


@pytest.fixture(params=networks(), ids=["seed_example", "pool_linear"])
def both(request):
    """Our NNGraph and the original's, of the same network and input, with their activations."""
    network, image = request.param
    ours_activations, theirs_activations = (
        nsp.Activations(network, image),
        original.Activations(network, image),
    )
    return (
        ours_activations,
        nsp.NNGraph(ours_activations),
        theirs_activations,
        original.NNGraph(theirs_activations),
    )


def test_nngraph_is_the_originals_digraph(both):
    _, ours, _, theirs = both
    assert isinstance(ours, nx.DiGraph)
    assert ours.nodes == list(theirs.nodes)
    assert dict(ours.nodes(data=True)) == dict(theirs.nodes(data=True))  # no node attributes
    assert len(ours.edges) == len(theirs.edges) == ours.number_of_edges()
    assert sorted(ours.edges(data=True)) == sorted(theirs.edges(data=True))  # no edge attributes
    for node in theirs.nodes:
        assert set(ours.predecessors(node)) == set(theirs.predecessors(node))
        assert set(ours.successors(node)) == set(theirs.successors(node))
        assert ours.in_degree(node) == theirs.in_degree(node)
        assert ours.out_degree(node) == theirs.out_degree(node)
    assert nx.is_directed_acyclic_graph(ours)
    position = {node: i for i, node in enumerate(nx.topological_sort(ours))}
    assert len(position) == theirs.number_of_nodes()
    assert all(position[u] < position[v] for u, v in theirs.edges)


def test_networkx_functions_and_the_originals_own_run_on_ours(both):
    """What the original does with its graph (``to_undirected``, ``adjacency_matrix``) works on ours."""
    _, ours, _, theirs = both
    ours_laplacian = original.transformer.Transformer.get_laplacian(ours).toarray()
    np.testing.assert_array_equal(
        ours_laplacian, original.transformer.Transformer.get_laplacian(theirs).toarray()
    )
    np.testing.assert_array_equal(Transformer.get_laplacian(ours).toarray(), ours_laplacian)
    assert set(ours.reverse().edges) == {(v, u) for u, v in theirs.edges}  # the original's reverse() fails
    assert str(ours) == f"NNGraph with {theirs.number_of_nodes()} nodes and {theirs.number_of_edges()} edges"


def test_digraph_built_on_first_use_read_only_and_copyable(seed_net, seed_image):
    activations = nsp.Activations(seed_net, seed_image)
    graph = nsp.NNGraph(activations)
    graph.transform(activations)
    assert graph.number_of_nodes() == 74 and graph.number_of_edges() == 584
    assert (
        graph.graph.layout.n_nodes == 74
    )  # the pre-DiGraph attribute ``graph`` still reads as the CSR graph
    assert graph.__dict__["_pending"] is not None  # nothing above built the networkx dicts
    assert graph.in_degree((3, 0)) == 32
    assert graph.__dict__["_pending"] is None
    with pytest.raises(nx.NetworkXError, match="Frozen"):
        graph.add_edge((0, 0, 0, 0), (3, 0))
    mutable = graph.copy()
    mutable.add_edge((3, 0), "extra")
    assert mutable.number_of_edges() == 585 and graph.number_of_edges() == 584
    assert nx.DiGraph(graph).edges == graph.edges


def test_lu_piv_as_original(seed_net, seed_image, original_laplacian):
    """None until the Laplacian transform is computed; then the LU factors of an eigenbasis of nsp's L."""
    activations = nsp.Activations(seed_net, seed_image)
    graph = nsp.NNGraph(activations)
    assert graph.lu_piv is None
    graph.compute_transformer(type="laplacian")
    theirs = original.NNGraph(original.Activations(seed_net, seed_image))
    laplacian = original.transformer.Transformer.get_laplacian(theirs).toarray().astype(float)
    basis = np.linalg.inv(scipy.linalg.lu_solve(graph.lu_piv, np.eye(len(laplacian))))
    eigenvalues = np.linalg.eigvalsh(laplacian)
    np.testing.assert_allclose(laplacian @ basis, basis * eigenvalues, atol=1e-9)
    signal = np.array(activations.to_vector())
    their_activations = original.Activations(seed_net, seed_image)
    their_spectrum = original.transformer.Transformer.get_fourier_coefficients(
        their_activations, type="laplacian", lu_piv=graph.lu_piv
    )
    ours = Transformer.get_fourier_coefficients(activations, type="laplacian", lu_piv=graph.lu_piv)
    np.testing.assert_allclose(ours.to_vector(), their_spectrum.to_vector(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(basis @ ours.pattern.values[0], signal, atol=1e-10)
    assert Transformer.get_inv_fourier_matrix(graph, type="laplacian") is graph.lu_piv


def test_fourier_coefficients_from_inv_F_as_original(both):
    ours_activations, ours, theirs_activations, theirs = both
    spectrum = Transformer.get_fourier_coefficients(ours_activations, inv_F=ours.inv_F)
    expected = original.transformer.Transformer.get_fourier_coefficients(
        theirs_activations, inv_F=theirs.get_transformer("standard")
    )
    assert spectrum.pattern.domain == "standard"
    np.testing.assert_allclose(spectrum.to_vector(), expected.to_vector(), rtol=1e-12, atol=1e-12)


def test_saved_graph_transforms_as_before(seed_net, seed_image, tmp_path):
    activations = nsp.Activations(seed_net, seed_image)
    graph = nsp.NNGraph(activations)
    for type in ("standard", "laplacian"):
        graph.get_transformer(type=type)
    path = tmp_path / "new" / "graph.pkl"
    OutputLoader.save(graph, path)
    assert h5py.is_hdf5(path)
    loaded = OutputLoader.load(path)
    assert isinstance(loaded, nsp.NNGraph) and loaded.INCL
    assert set(loaded.edges) == set(graph.edges)
    np.testing.assert_array_equal(loaded.inv_F.toarray(), graph.inv_F.toarray())
    for part, expected in zip(loaded.lu_piv, graph.lu_piv):
        np.testing.assert_array_equal(part, expected)
    np.testing.assert_array_equal(
        loaded.transform(activations).to_vector(), graph.transform(activations).to_vector()
    )
    before, after = graph.transform(activations, "laplacian"), loaded.transform(activations, "laplacian")
    np.testing.assert_array_equal(after.pattern.eigenvalues, before.pattern.eigenvalues)
    # Same stored bits; the product's rounding depends on the eigenvectors' memory order only.
    np.testing.assert_allclose(after.to_vector(), before.to_vector(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("type", ["standard", "laplacian"])
def test_saved_activations_and_spectra_round_trip(seed_net, seed_image, tmp_path, type):
    activations = nsp.Activations(seed_net, seed_image)
    spectrum = nsp.NNGraph(activations).transform(activations, type=type)
    for saved, name in ((activations, "activations.obj"), (spectrum, "spectrum.obj")):
        OutputLoader.save(saved, tmp_path / name)
        loaded = OutputLoader.load(tmp_path / name)
        assert loaded.layernames == saved.layernames
        assert loaded.layerdescriptions == [str(item) for item in saved.layerdescriptions]
        assert loaded.to_vector() == saved.to_vector()
        assert loaded.pattern.domain == saved.pattern.domain
        for values, expected in zip(loaded.layeractivations, saved.layeractivations):
            torch.testing.assert_close(values, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="read from a file"):
        nsp.NNGraph(OutputLoader.load(tmp_path / "activations.obj"))


def test_original_pickles_only_when_trusted(seed_net, seed_image, tmp_path):
    theirs = original.NNGraph(original.Activations(seed_net, seed_image))
    path = str(tmp_path / "graph.obj")
    original.OutputLoader.save(theirs, path)
    with pytest.raises(PickleNotTrustedError, match=r"graph\.obj is a pickle.*runs any code.*trusted=True"):
        OutputLoader.load(path)
    loaded = OutputLoader.load(path, trusted=True)
    assert isinstance(loaded, original.NNGraph)
    assert set(loaded.edges) == set(theirs.edges)


def test_refusals_name_the_file_or_type(seed_net, seed_image, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a stored object")
    with pytest.raises(ValueError, match=r"notes\.txt is neither"):
        OutputLoader.load(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as file:
        file["x"] = [1]
    with pytest.raises(ValueError, match=r"other\.h5 is an HDF5 file but not one"):
        OutputLoader.load(other)
    with pytest.raises(TypeError, match=r"nsp\.nngraph\.NNGraph"):
        OutputLoader.save(original.NNGraph(original.Activations(seed_net, seed_image)), tmp_path / "g.obj")
    assert not (tmp_path / "g.obj").exists()


def test_failed_save_leaves_the_previous_file(seed_net, seed_image, tmp_path, monkeypatch):
    activations = nsp.Activations(seed_net, seed_image)
    graph = nsp.NNGraph(activations)
    path = tmp_path / "graph.obj"
    OutputLoader.save(graph, path)
    previous = path.read_bytes()
    graph.get_transformer("laplacian")
    copies, copy_contents = [], legacy._copy_contents

    def fail_on_second_part(source, target):
        copies.append(source)
        if len(copies) == 2:
            raise OSError("disk full")
        copy_contents(source, target)

    monkeypatch.setattr(legacy, "_copy_contents", fail_on_second_part)
    with pytest.raises(OSError, match="disk full"):
        OutputLoader.save(graph, path)
    assert path.read_bytes() == previous
    assert os.listdir(tmp_path) == ["graph.obj"]


#: nsp's tutorial 2 (tutorials/tutorial_2.py of the original repository), call for call, after its
#: network and data loading (``torch.load`` of a pretrained network, an MNIST download), which the
#: tests replace by a seeded network and a digit of scikit-learn's ``load_digits``.
TUTORIAL_2 = """
activations = nsp.Activations(network, image)
graph = nsp.NNGraph(activations)
graph.get_transformer(type='standard')
graph.get_transformer(type='laplacian')
nsp.OutputLoader.save(graph, 'tutorial_2/graph.obj')
graph = nsp.OutputLoader.load('tutorial_2/graph.obj')
spectrum = graph.transform(activations)
spectrum_lap = graph.transform(activations, type='laplacian')
scale = 'layerscale'
cmap_style = 'viridis'
nsp.Visualizer.visualize_pattern(activations, pdf_filepath='tutorial_2/activations.pdf', scale=scale,
                                 cmap_style=cmap_style)
nsp.Visualizer.visualize_pattern(spectrum, pdf_filepath='tutorial_2/spectrum.pdf', scale=scale,
                                 cmap_style=cmap_style)
nsp.Visualizer.visualize_pattern(spectrum_lap, pdf_filepath='tutorial_2/spectrum_lap.pdf', scale=scale,
                                 cmap_style=cmap_style)
nsp.OutputLoader.save(activations, 'tutorial_2/activations.obj')
nsp.OutputLoader.save(activations, 'tutorial_2/spectrum.obj')
nsp.OutputLoader.save(activations, 'tutorial_2/spectrum_lap.obj')
"""


def run_tutorial_2(module, network, image, folder):
    """Run the tutorial with ``nsp`` bound to ``module`` in ``folder``; its variables."""
    folder.mkdir()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        variables = {"nsp": module, "network": network, "image": image}
        exec(TUTORIAL_2, variables)
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(folder / "tutorial_2")) == [
        "activations.obj", "activations.pdf", "graph.obj", "spectrum.obj", "spectrum.pdf", "spectrum_lap.obj",
        "spectrum_lap.pdf",
    ]  # fmt: skip
    return variables


@pytest.mark.parametrize(
    ("channels", "size"),
    [((2, 3), 16), pytest.param((10, 20), 28, marks=pytest.mark.slow)],
    ids=["reduced_641_neurons", "tutorial_9594_neurons"],
)
def test_tutorial_2_gives_the_originals_spectra(channels, size, tmp_path, original_laplacian):
    """Same spectra as the original: standard ones entry by entry, Laplacian ones per eigenspace.

    The reduced case has the tutorial's layers with fewer channels on a 16×16 digit (641 neurons):
    the original takes 77 s on 2,474 neurons (2 channels at 28×28) and many minutes on the
    tutorial's 9,594, mostly building its graph from Jacobians entry by entry.
    """
    torch.manual_seed(0)
    network, image = TutorialNet(channels, size), digit_image(size)
    ours = run_tutorial_2(nsp, network, image, tmp_path / "ours")
    theirs = run_tutorial_2(original, network, image, tmp_path / "theirs")
    with pytest.raises(PickleNotTrustedError):
        OutputLoader.load(tmp_path / "theirs" / "tutorial_2" / "graph.obj")

    signal = np.array(theirs["activations"].to_vector())
    np.testing.assert_array_equal(ours["activations"].to_vector(), signal)
    assert set(ours["graph"].edges) == set(theirs["graph"].edges)

    standard, their_standard = (
        np.array(ours["spectrum"].to_vector()),
        np.array(theirs["spectrum"].to_vector()),
    )
    scale = theirs["graph"].inv_F @ np.abs(their_standard)  # the size of the terms summed per coefficient
    assert np.all(np.abs(standard - their_standard) <= 1e-9 * scale)

    laplacian = original.transformer.Transformer.get_laplacian(theirs["graph"]).toarray().astype(float)
    eigenvalues = np.linalg.eigvalsh(laplacian)
    spectrum = ours["spectrum_lap"].pattern
    np.testing.assert_allclose(spectrum.eigenvalues, eigenvalues, atol=1e-9)
    # The eigenbasis is free inside each eigenspace: its energy is not.
    groups = np.concatenate([[0], np.cumsum(np.diff(eigenvalues) > 1e-6)])
    their_energy = np.bincount(groups, weights=np.array(theirs["spectrum_lap"].to_vector()) ** 2)
    our_energy = np.bincount(groups, weights=spectrum.values[0] ** 2)
    np.testing.assert_allclose(our_energy, their_energy, rtol=1e-7, atol=1e-9 * np.sum(signal**2))
