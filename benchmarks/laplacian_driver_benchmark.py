"""Compare LAPACK drivers for the full eigendecomposition of a network's graph Laplacian.

The graph is that of the nsp tutorial MNIST network (conv 1→10 k5, max-pool 2, conv 10→20 k5,
max-pool 2, linear) at a reduced input size: 18×18 by default (2,984 neurons), 20×20 gives
4,010, and 28×28 the tutorial's own 9,594 (several minutes per driver on 2 cores). Its
eigenvalues have multiplicities in the thousands, where the MRRR driver slows down.

Each driver runs in its own subprocess, on the same Laplacian, so that the peak resident
memory (``VmHWM``, which sees LAPACK's workspace, unlike ``tracemalloc``) is its own. For
``scipy.linalg.eigh(..., driver=d)`` with ``d`` in ``evr`` (MRRR, SciPy's default), ``evd``
(divide and conquer), ``ev`` (QR) and for ``numpy.linalg.eigh`` (``syevd``), and for the
package's full decomposition (:func:`~nsp_pipeline.transforms.laplacian.dense_eigh`, ``evd`` in
place, signs fixed), it prints the wall time, the ratio to the fastest, the peak memory (the
interpreter and SciPy take about 65 MiB of it), ``max |L U - U Λ|`` and ``max |UᵀU - I|``,
and whether a second run of the package's decomposition in a fresh process gives the same bytes.

Usage: ``python benchmarks/laplacian_driver_benchmark.py [--input-size 18] [--drivers evr evd ...]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.linalg
import scipy.sparse as sp

DRIVERS = ("evr", "evd", "ev", "numpy", "package")


def tutorial_graph(input_size: int):
    """Neuron graph of the nsp tutorial MNIST network, its linear layer sized for the input."""
    import torch
    from torch import nn

    from nsp_pipeline import build_graph
    from nsp_pipeline.model.architectures import MnistTutorialNet

    side = ((input_size - 4) // 2 - 4) // 2
    if side < 1:
        raise SystemExit(
            f"--input-size must be at least 16 (two 5×5 convolutions and 2×2 pools), got {input_size}"
        )

    torch.manual_seed(0)
    net = MnistTutorialNet()
    net.fc = nn.Linear(20 * side * side, 10)  # the tutorial net's linear layer, for this input size
    return build_graph(net, torch.rand(1, 1, input_size, input_size))


def peak_resident_bytes() -> int:
    """This process's peak resident memory: ``VmHWM``, or ``ru_maxrss`` where there is no ``/proc``.

    ``ru_maxrss`` carries over the parent's peak across ``exec`` on Linux; ``VmHWM`` does not.
    """
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(path: str, driver: str) -> None:
    """Decompose the Laplacian stored at ``path`` with ``driver``; print one JSON line."""
    laplacian = sp.load_npz(path).tocsr()
    dense = laplacian.toarray()
    start = time.perf_counter()
    if driver == "numpy":
        values, vectors = np.linalg.eigh(dense)
    elif driver == "package":
        from nsp_pipeline.transforms.laplacian import dense_eigh

        del dense
        values, vectors = dense_eigh(laplacian)
    else:
        values, vectors = scipy.linalg.eigh(dense, driver=driver)
    seconds = time.perf_counter() - start
    peak = peak_resident_bytes()
    residual = float(np.abs(laplacian @ vectors - vectors * values).max())
    gram = vectors.T @ vectors
    gram[np.diag_indices_from(gram)] -= 1.0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_bytes": peak,
                "residual": residual,
                "orthogonality": float(np.abs(gram).max()),
                "sha256": hashlib.sha256(np.ascontiguousarray(vectors).tobytes()).hexdigest()[:16],
            }
        )
    )


def run_worker(path: str, driver: str) -> dict:
    """Run :func:`worker` in a fresh Python process and return what it measured."""
    command = [sys.executable, __file__, "--worker", path, driver]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=18, help="input side: 18 (2,984 nodes), 28 (9,594)")
    parser.add_argument("--drivers", nargs="+", choices=DRIVERS, default=list(DRIVERS), help="in this order")
    parser.add_argument("--worker", nargs=2, metavar=("LAPLACIAN_NPZ", "DRIVER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    from nsp_pipeline.transforms.laplacian import laplacian_matrix

    graph = tutorial_graph(args.input_size)
    laplacian = laplacian_matrix(graph)
    n = graph.n_nodes
    values = np.sort(np.linalg.eigvalsh(laplacian.toarray()))
    multiplicities = np.diff(np.flatnonzero(np.diff(np.r_[-np.inf, values, np.inf]) > 1e-8))
    print(
        f"nsp tutorial network at {args.input_size}×{args.input_size}: {n} nodes, {graph.n_edges} edges; "
        f"{len(multiplicities)} distinct eigenvalues, largest multiplicity {multiplicities.max()}; "
        f"{os.cpu_count()} cores"
    )
    print(f"dense L: {8 * n * n / 2**20:.0f} MiB")
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "laplacian.npz")
        sp.save_npz(path, sp.csr_matrix(laplacian))
        for driver in args.drivers:
            rows[driver] = run_worker(path, driver)
            print(f"  {driver:<8} done in {rows[driver]['seconds']:.1f} s", flush=True)
        if "package" in rows:  # determinism: a second fresh process must give the same bytes
            same = run_worker(path, "package")["sha256"] == rows["package"]["sha256"]
            print(f"  package  rerun in a fresh process: {'identical' if same else 'DIFFERENT'} eigenvectors")
    fastest = min(row["seconds"] for row in rows.values())
    print(
        f"\n{'driver':<10}{'time (s)':>10}{'ratio':>8}{'peak RSS (MiB)':>16}"
        f"{'max|LU-UΛ|':>13}{'max|UᵀU-I|':>13}  sha256(U)"
    )
    for driver, row in rows.items():
        print(
            f"{driver:<10}{row['seconds']:10.2f}{row['seconds'] / fastest:7.2f}×"
            f"{row['peak_bytes'] / 2**20:16.0f}{row['residual']:13.1e}{row['orthogonality']:13.1e}"
            f"  {row['sha256']}"
        )


if __name__ == "__main__":
    main()
