"""Relations between two layers' neurons as unions of Kronecker products of per-axis 0/1 matrices.

Every layer is seen as a 3-axis grid (channels, rows, columns) whose C order is the layer's
node order. A relation ``R`` between a target layer and a source layer (``R[v, u] = 1`` when
``u`` relates to ``v``) is a *term* when it factorises as ``channels ⊗ rows ⊗ columns``; a
general relation here is a union of terms. Terms compose axis by axis (boolean products),
intersect axis by axis, and apply to a signal on the source layer with one small operation per
axis, so no relation is ever stored neuron by neuron.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import scipy.sparse as sp


class AxisMap:
    """A 0/1 matrix between one axis of a target layer and of a source layer.

    Stored either sparsely or, when every related pair is ``(i, j)`` with ``i`` in a target set
    and ``j`` in a source set (all-to-all, as for ``Linear``), as those two sets, so that a
    4096 × 4096 all-ones map costs two vectors.

    Parameters
    ----------
    matrix : scipy.sparse array, optional
        ``(target size, source size)``; any non-zero counts as 1.
    outer : (numpy.ndarray, numpy.ndarray), optional
        Boolean target and source masks of an all-to-all map (instead of ``matrix``).
    """

    __slots__ = ("is_identity", "matrix", "outer", "shape")

    def __init__(self, matrix=None, outer: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.matrix = self.outer = None
        self.is_identity = False
        if outer is not None:
            rows, cols = (np.asarray(mask, dtype=bool) for mask in outer)
            self.outer = (rows, cols) if rows.any() and cols.any() else (rows & False, cols & False)
            self.shape = (len(rows), len(cols))
            return
        matrix = sp.csr_array(matrix, dtype=np.float64)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        matrix.data[:] = 1.0
        matrix.sort_indices()
        rows, cols = matrix.shape
        if matrix.nnz == rows * cols and matrix.nnz > 0:  # all-to-all: keep it as two masks
            self.outer, self.shape = (np.ones(rows, dtype=bool), np.ones(cols, dtype=bool)), matrix.shape
            return
        self.matrix, self.shape = matrix, matrix.shape
        self.is_identity = (
            rows == cols and matrix.nnz == rows and bool(np.array_equal(matrix.indices, np.arange(rows)))
        )

    @classmethod
    def identity(cls, size: int) -> AxisMap:
        """The identity on an axis of ``size``."""
        return cls(sp.eye_array(size, format="csr"))

    @classmethod
    def ones(cls, target: int, source: int) -> AxisMap:
        """Every target position relates to every source position."""
        return cls(outer=(np.ones(target, dtype=bool), np.ones(source, dtype=bool)))

    @classmethod
    def from_pairs(cls, target: np.ndarray, source: np.ndarray, shape: tuple[int, int]) -> AxisMap:
        """From ``(target position, source position)`` pairs."""
        return cls(sp.csr_array((np.ones(len(target)), (target, source)), shape=shape))

    @property
    def is_ones(self) -> bool:
        """Every target position relates to every source position."""
        return self.outer is not None and bool(self.outer[0].all() and self.outer[1].all())

    @property
    def is_empty(self) -> bool:
        """No position relates to any other."""
        return not self.outer[0].any() if self.outer is not None else self.matrix.nnz == 0

    @property
    def nnz(self) -> int:
        """Number of related pairs."""
        if self.outer is not None:
            return int(self.outer[0].sum()) * int(self.outer[1].sum())
        return self.matrix.nnz

    def sparse(self) -> sp.csr_array:
        """The map as a sparse matrix."""
        if self.matrix is not None:
            return self.matrix
        rows, cols = self.outer
        return sp.csr_array(np.outer(rows, cols).astype(np.float64))

    def compose(self, inner: AxisMap) -> AxisMap:
        """Boolean product ``self ∘ inner``: target relates to source through some middle position."""
        if self.is_identity:
            return inner
        if inner.is_identity:
            return self
        if self.outer is not None:  # (r cᵀ) X = r (Xᵀ c)ᵀ
            rows, middle = self.outer
            return AxisMap(outer=(rows, inner.reaches_from(middle)))
        if inner.outer is not None:  # X (r cᵀ) = (X r) cᵀ
            middle, cols = inner.outer
            return AxisMap(outer=(self.reaches(middle), cols))
        return AxisMap(self.matrix @ inner.matrix)

    def reaches(self, source_mask: np.ndarray) -> np.ndarray:
        """Target positions related to at least one position of ``source_mask``."""
        if self.outer is not None:
            return self.outer[0] & bool((self.outer[1] & source_mask).any())
        return (self.matrix @ source_mask.astype(np.float64)) > 0

    def reaches_from(self, target_mask: np.ndarray) -> np.ndarray:
        """Source positions related to at least one position of ``target_mask``."""
        if self.outer is not None:
            return self.outer[1] & bool((self.outer[0] & target_mask).any())
        return (self.matrix.T @ target_mask.astype(np.float64)) > 0

    def intersect(self, other: AxisMap) -> AxisMap:
        """Positions related in both."""
        if self.outer is not None and other.outer is not None:
            return AxisMap(outer=(self.outer[0] & other.outer[0], self.outer[1] & other.outer[1]))
        if self.outer is not None:
            self, other = other, self
        if other.outer is not None:
            matrix = self.matrix.tocoo()
            keep = other.outer[0][matrix.row] & other.outer[1][matrix.col]
            return AxisMap(
                sp.csr_array((matrix.data[keep], (matrix.row[keep], matrix.col[keep])), shape=self.shape)
            )
        return AxisMap(self.matrix.multiply(other.matrix))

    def contains(self, other: AxisMap) -> bool:
        """Whether every pair of ``other`` is a pair of ``self``."""
        return other.is_empty or self.intersect(other).nnz == other.nnz

    def apply(self, values: np.ndarray, axis: int) -> np.ndarray:
        """Sum ``values`` over the related source positions along ``axis``."""
        if self.is_identity:
            return values
        if self.outer is not None:
            rows, cols = self.outer
            total = np.compress(cols, values, axis=axis).sum(axis=axis, keepdims=True)
            shape = [1] * values.ndim
            shape[axis] = len(rows)
            return total * rows.reshape(shape)
        moved = np.moveaxis(values, axis, 0)
        summed = self.matrix @ moved.reshape(moved.shape[0], -1)
        return np.moveaxis(summed.reshape(self.shape[0], *moved.shape[1:]), 0, axis)


@dataclass(frozen=True)
class Term:
    """A relation ``channels ⊗ rows ⊗ columns`` between a target and a source layer grid."""

    channels: AxisMap
    rows: AxisMap
    cols: AxisMap

    @property
    def axes(self) -> tuple[AxisMap, AxisMap, AxisMap]:
        """The three per-axis maps."""
        return (self.channels, self.rows, self.cols)

    @classmethod
    def identity(cls, grid: tuple[int, int, int]) -> Term:
        """Every neuron relates to itself."""
        return cls(*(AxisMap.identity(size) for size in grid))

    @property
    def is_empty(self) -> bool:
        """No neuron relates to any other."""
        return any(axis.is_empty for axis in self.axes)

    def compose(self, inner: Term) -> Term:
        """``self ∘ inner``, axis by axis (exact for Kronecker products)."""
        return Term(*(a.compose(b) for a, b in zip(self.axes, inner.axes)))

    def intersect(self, other: Term) -> Term:
        """Pairs in both relations."""
        return Term(*(a.intersect(b) for a, b in zip(self.axes, other.axes)))

    def contains(self, other: Term) -> bool:
        """Whether every pair of ``other`` is a pair of ``self``."""
        return other.is_empty or all(a.contains(b) for a, b in zip(self.axes, other.axes))

    def apply(self, values: np.ndarray, channel_totals: np.ndarray | None = None) -> np.ndarray:
        """Sum over related source neurons: ``(batch, *source grid)`` → ``(batch, *target grid)``.

        All-ones axes are summed first (they shrink the data most) and broadcast last;
        ``channel_totals`` (``values`` summed over channels) may be passed in to be reused.
        """
        full = [axis + 1 for axis in range(3) if self.axes[axis].is_ones]
        if full == [1] and channel_totals is not None:
            values = channel_totals
        elif full:
            values = values.sum(axis=tuple(full), keepdims=True)
        for axis in range(3):
            if not self.axes[axis].is_ones:
                values = self.axes[axis].apply(values, axis + 1)
        target = (values.shape[0], *(axis.shape[0] for axis in self.axes))
        return np.broadcast_to(values, target) if full else values

    def dense(self) -> np.ndarray:
        """The relation neuron by neuron (for tests on small layers)."""
        matrices = [axis.sparse().toarray() for axis in self.axes]
        return np.kron(np.kron(matrices[0], matrices[1]), matrices[2]) > 0


class Relation:
    """A union of :class:`Term` objects between one target and one source layer.

    Terms contained in another term are dropped as they are added.
    """

    __slots__ = ("terms",)

    def __init__(self, terms: list[Term] | None = None) -> None:
        self.terms: list[Term] = []
        for term in terms or []:
            self.add(term)

    def add(self, term: Term) -> None:
        """Union with one term."""
        if term.is_empty or any(kept.contains(term) for kept in self.terms):
            return
        self.terms = [kept for kept in self.terms if not term.contains(kept)] + [term]

    def union(self, other: Relation) -> None:
        """Union with another relation, in place."""
        for term in other.terms:
            self.add(term)

    def compose(self, inner: Relation) -> Relation:
        """``self ∘ inner`` (composition distributes over unions)."""
        return Relation([outer.compose(term) for outer in self.terms for term in inner.terms])

    def apply(self, values: np.ndarray, channel_totals: np.ndarray | None = None) -> np.ndarray:
        """Sum over the related source neurons, each counted once (inclusion–exclusion)."""
        total = None
        for size in range(1, len(self.terms) + 1):
            sign = 1.0 if size % 2 else -1.0
            for subset in combinations(self.terms, size):
                term = subset[0]
                for other in subset[1:]:
                    term = term.intersect(other)
                if term.is_empty:
                    continue
                part = term.apply(values, channel_totals)
                total = sign * part if total is None else total + sign * part
        return total

    def dense(self) -> np.ndarray:
        """The relation neuron by neuron (for tests on small layers)."""
        result = None
        for term in self.terms:
            result = term.dense() if result is None else result | term.dense()
        return result
