"""Time full and partial Laplacian eigendecompositions on an MNIST and a CIFAR-10 network.

Partial (the ``k`` lowest frequencies, sparse shift-invert Lanczos with deflated reruns) on:

* the nsp tutorial MNIST network (``MnistTutorialNet``, 9,594 neurons), where ``--full``
  also times the dense decomposition (O(n³): minutes) and checks that both agree;
* the CIFAR-10 CNN of the neuron-graph seed notebook (``Cifar10CNN`` below, 53,290
  neurons), far beyond the dense decomposition (a 53,290² float64 matrix takes 21 GiB).

For each it prints the graph size, the times, the eigenvalue range, and the residual
energy ``‖s‖² - ‖ŝ_k‖²`` (the energy of the frequencies not computed) of the activation
pattern of a random input and of white noise (which leaves about ``1 - k/n``).

Usage: ``python benchmarks/laplacian_benchmark.py [--k 100] [--full] [--skip-cifar] [--verbose]``
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nsp_pipeline import build_graph, laplacian_operator, trace
from nsp_pipeline.model.architectures import MnistTutorialNet


class Cifar10CNN(nn.Module):
    """The CIFAR-10 CNN of the neuron-graph seed notebook (Keras ``CIFAR-10_CNN5``), for 3×32×32.

    conv 3→32 (3×3, valid), max-pool 2, conv 32→64 (3×3), max-pool 2, conv 64→64 (3×3),
    flatten, dense 1024→64, dense 64→10, ReLUs fused into the convolutions and the first
    dense layer as in Keras (functional here, so they add no layers). The notebook's dropout
    is the identity at inference and adds no neurons either. Neurons per layer: 3,072 input,
    28,800, 7,200, 10,816, 2,304, 1,024, 64, 10: 53,290 in total.
    """

    input_shape = (3, 32, 32)

    def __init__(self) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(3, 32, kernel_size=3)
        self.max_pooling2d = nn.MaxPool2d(2)
        self.conv_1 = nn.Conv2d(32, 64, kernel_size=3)
        self.max_pooling2d_1 = nn.MaxPool2d(2)
        self.conv_2 = nn.Conv2d(64, 64, kernel_size=3)
        self.dense_0 = nn.Linear(1024, 64)
        self.dense_1 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a ``(batch, 3, 32, 32)`` input."""
        x = self.max_pooling2d(F.relu(self.conv_0(x)))
        x = self.max_pooling2d_1(F.relu(self.conv_1(x)))
        x = F.relu(self.conv_2(x))
        x = F.relu(self.dense_0(torch.flatten(x, 1)))
        return self.dense_1(x)


def timed(function):
    """Wall time of one call, and its result."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def report_partial(name: str, architecture: type[nn.Module], k: int, full: bool) -> None:
    """Build the graph of a seeded ``architecture``, time its partial (and optionally full) decomposition."""
    torch.manual_seed(0)
    model = architecture().eval()
    inputs = torch.rand(1, *model.input_shape)
    graph_time, graph = timed(lambda: build_graph(model, inputs))
    n = graph.n_nodes
    print(f"\n{name}: {n} neurons, {graph.n_edges} edges (graph built in {graph_time:.1f} s)")

    partial_time, partial = timed(lambda: laplacian_operator(graph, k=k))
    lam = partial.eigenvalues
    print(f"  partial k={k:<5}          {partial_time:8.1f} s")
    print(
        f"  eigenvalues              λ_1 = {lam[0]:.2e}, λ_2 = {lam[1]:.4f}, λ_{k} = {lam[-1]:.4f}"
        f"  ({len(np.unique(np.round(lam, 8)))} distinct among {k})"
    )
    activations = trace(model, inputs).pattern().values
    noise = np.random.default_rng(2024).normal(size=(1, n))  # not the solver's seed
    for label, signal in (("activations of a random input", activations), ("white noise", noise)):
        energy = float(np.sum(signal**2))
        residual = float(partial.residual_energy(signal)[0])
        print(
            f"  residual energy          {residual:.4e} of {energy:.4e} = {residual / energy:7.2%}  ({label})"
        )

    if full:
        full_time, exact = timed(lambda: laplacian_operator(graph, max_nodes=max(n, 10_000)))
        lam_full = exact.eigenvalues
        agree = np.max(np.abs(lam_full[:k] - lam))
        print(
            f"  full decomposition       {full_time:8.1f} s   ({full_time / partial_time:.1f}× the partial)"
        )
        print(f"  eigenvalues agree to     {agree:.1e}; λ_n = {lam_full[-1]:.1f}")
        # U_k is unique only up to rotations inside each eigenspace, and an eigenspace that
        # straddles position k is cut differently by the two: compare the complete ones.
        complete = int(np.sum(lam_full < lam[-1] - 1e-6))
        multiplicity = int(np.sum(np.abs(lam_full - lam[-1]) <= 1e-6))
        ours = np.sum(partial.coefficients(activations)[:, :complete] ** 2)
        theirs = np.sum((activations @ exact.eigenvectors[:, :complete]) ** 2)
        print(
            f"  λ_{k} has multiplicity {multiplicity} (positions {complete + 1}-{complete + multiplicity}); "
            f"energy of the activations in the {complete} frequencies below it: "
            f"{ours:.6e} (partial) vs {theirs:.6e} (full)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=100, help="number of lowest frequencies")
    parser.add_argument("--full", action="store_true", help="also time the dense decomposition on MNIST")
    parser.add_argument("--skip-cifar", action="store_true", help="only the MNIST network")
    parser.add_argument("--verbose", action="store_true", help="log the solver's rounds")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(relativeCreated)8.0f ms %(name)s: %(message)s")
        logging.getLogger("nsp_pipeline.graph.build").setLevel(logging.WARNING)

    print(f"torch threads {torch.get_num_threads()}; k = {args.k}")
    report_partial("nsp tutorial MNIST network", MnistTutorialNet, args.k, args.full)
    if not args.skip_cifar:
        report_partial("CIFAR-10 CNN of the neuron-graph notebook", Cifar10CNN, args.k, full=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak resident memory {peak:.1f} GiB")


if __name__ == "__main__":
    main()
