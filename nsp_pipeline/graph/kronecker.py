"""Relations between two layers' neurons as unions of Kronecker products of per-axis 0/1 matrices.

Every layer is seen as a 3-axis grid (channels, rows, columns) whose C order is the layer's
node order. A relation ``R`` between a target layer and a source layer (``R[v, u] = 1`` when
``u`` relates to ``v``) is a *term* when it factorises as ``channels ⊗ rows ⊗ columns``; a
general relation here is a union of terms. Terms compose axis by axis (boolean products),
intersect axis by axis, and apply to a signal on the source layer with one small operation per
axis, so no relation is ever stored neuron by neuron.

Composing the relations of a deep network layer pair by layer pair forms the same few per-axis maps
again and again (the rows reached through the same windows). So equal maps made by
:meth:`AxisMap.identity`, :meth:`AxisMap.ones`, :meth:`AxisMap.from_pairs`, :meth:`AxisMap.compose`
and :meth:`AxisMap.intersect` are one object, and each map remembers its compositions,
intersections and containments with the others: each is computed once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import scipy.sparse as sp


class AxisMap:
    """A 0/1 matrix between one axis of a target layer and of a source layer.

    Stored either sparsely or, when every related pair is ``(i, j)`` with ``i`` in a target set
    and ``j`` in a source set (all-to-all, as for ``Linear``), as those two sets, so that a
    4096 × 4096 all-ones map costs two vectors. Maps are shared (see the module docstring), so
    none is ever changed in place.

    Parameters
    ----------
    matrix : scipy.sparse array, optional
        ``(target size, source size)``; any non-zero counts as 1.
    outer : (numpy.ndarray, numpy.ndarray), optional
        Boolean target and source masks of an all-to-all map (instead of ``matrix``).
    """

    __slots__ = ("__weakref__", "_known", "_nnz", "is_identity", "is_ones", "matrix", "outer", "shape")

    def __init__(self, matrix=None, outer: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.matrix = self.outer = None
        self.is_identity = self.is_ones = False
        self._known: dict[tuple[str, AxisMap], AxisMap | bool] = {}
        if outer is not None:
            rows, cols = (np.asarray(mask, dtype=bool) for mask in outer)
            self.outer = (rows, cols) if rows.any() and cols.any() else (rows & False, cols & False)
            self.shape = (len(rows), len(cols))
            self._nnz = int(self.outer[0].sum()) * int(self.outer[1].sum())
            self.is_ones = bool(self.outer[0].all() and self.outer[1].all())
            return
        matrix = sp.csr_array(matrix, dtype=np.float64)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        matrix.data[:] = 1.0
        matrix.sort_indices()
        rows, cols = matrix.shape
        self._nnz = matrix.nnz
        if matrix.nnz == rows * cols and matrix.nnz > 0:  # all-to-all: keep it as two masks
            self.outer, self.shape = (np.ones(rows, dtype=bool), np.ones(cols, dtype=bool)), matrix.shape
            self.is_ones = True
            return
        self.matrix, self.shape = matrix, matrix.shape
        self.is_identity = (
            rows == cols and matrix.nnz == rows and bool(np.array_equal(matrix.indices, np.arange(rows)))
        )

    @classmethod
    def identity(cls, size: int) -> AxisMap:
        """The identity on an axis of ``size``."""
        kept = _SHARED.get(("identity", size))
        if kept is None:
            _SHARED["identity", size] = kept = _shared(cls(sp.eye_array(size, format="csr")))
        return kept

    @classmethod
    def ones(cls, target: int, source: int) -> AxisMap:
        """Every target position relates to every source position."""
        return _shared(cls(outer=(np.ones(target, dtype=bool), np.ones(source, dtype=bool))))

    @classmethod
    def from_pairs(cls, target: np.ndarray, source: np.ndarray, shape: tuple[int, int]) -> AxisMap:
        """From ``(target position, source position)`` pairs."""
        return _shared(cls(sp.csr_array((np.ones(len(target)), (target, source)), shape=shape)))

    @property
    def is_empty(self) -> bool:
        """No position relates to any other."""
        return self._nnz == 0

    @property
    def nnz(self) -> int:
        """Number of related pairs."""
        return self._nnz

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
        known = self._known.get(("compose", inner))
        if known is None:
            known = self._known["compose", inner] = _shared(self._compose(inner))
        return known

    def _compose(self, inner: AxisMap) -> AxisMap:
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
        known = self._known.get(("intersect", other))
        if known is None:
            known = self._known["intersect", other] = _shared(self._intersect(other))
        return known

    def _intersect(self, other: AxisMap) -> AxisMap:
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
        if other is self or other._nnz == 0:
            return True
        known = self._known.get(("contains", other))
        if known is None:
            known = self._known["contains", other] = self.intersect(other)._nnz == other._nnz
        return known

    def _key(self) -> tuple:
        """Equal keys: equal maps, stored alike."""
        if self.outer is not None:
            return ("outer", self.shape, *(np.packbits(mask).tobytes() for mask in self.outer))
        indptr, indices = self.matrix.indptr, self.matrix.indices
        dtypes = (indptr.dtype.str, indices.dtype.str)
        return ("matrix", self.shape, dtypes, indptr.tobytes(), indices.tobytes())

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


#: Every map made by a constructor or an operation of :class:`AxisMap`, by :meth:`AxisMap._key`.
_SHARED: weakref.WeakValueDictionary[tuple, AxisMap] = weakref.WeakValueDictionary()


def _shared(axis: AxisMap) -> AxisMap:
    """The map equal to ``axis`` made before, if any still exists, else ``axis``."""
    key = axis._key()
    kept = _SHARED.get(key)
    if kept is None:
        _SHARED[key] = kept = axis
    return kept


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
        return self.channels._nnz == 0 or self.rows._nnz == 0 or self.cols._nnz == 0

    @property
    def is_identity(self) -> bool:
        """Every neuron relates to itself only."""
        return self.channels.is_identity and self.rows.is_identity and self.cols.is_identity

    def compose(self, inner: Term) -> Term:
        """``self ∘ inner``, axis by axis (exact for Kronecker products)."""
        channels, rows, cols = self.channels, self.rows, self.cols
        return Term(channels.compose(inner.channels), rows.compose(inner.rows), cols.compose(inner.cols))

    def intersect(self, other: Term) -> Term:
        """Pairs in both relations."""
        return Term(
            self.channels.intersect(other.channels),
            self.rows.intersect(other.rows),
            self.cols.intersect(other.cols),
        )

    def contains(self, other: Term) -> bool:
        """Whether every pair of ``other`` is a pair of ``self``."""
        return other.is_empty or (
            self.channels.contains(other.channels)
            and self.rows.contains(other.rows)
            and self.cols.contains(other.cols)
        )

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
        if term.is_empty:
            return
        for kept in self.terms:
            if kept.contains(term):
                return
        self.terms = [kept for kept in self.terms if not term.contains(kept)] + [term]

    def union(self, other: Relation) -> None:
        """Union with another relation, in place."""
        for term in other.terms:
            self.add(term)

    def compose(self, inner: Relation) -> Relation:
        """``self ∘ inner`` (composition distributes over unions)."""
        if len(self.terms) == 1 and self.terms[0].is_identity:
            return inner.copy()
        return Relation([outer.compose(term) for outer in self.terms for term in inner.terms])

    def copy(self) -> Relation:
        """A relation with the same terms."""
        relation = Relation()
        relation.terms = list(self.terms)
        return relation

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
