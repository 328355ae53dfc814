"""MUNGE pseudo-data (Bucila, Caruana & Niculescu-Mizil 2006; thesis section 2.3): a fourth data generator.

For each example e with nearest neighbour e' (Euclidean, the example itself excluded) and each attribute a,
with probability p the value e_a is replaced by a draw from N(e'_a, (|e_a - e'_a| / s)^2)            (S1.8)

so the pseudo-examples stay near the data, mixing attributes of close neighbours with a spread that is
small where the data are dense. ``p`` is the swap probability and ``s`` the local-variance divisor.

Departure from the sequential algorithm of the paper, which walks through a copy of the data and also
overwrites e'_a by a draw from N(e_a, same variance) in place (so later examples swap against values already
perturbed): here every row is perturbed against its neighbour in the *original* data, independently,
in one vectorised draw. The rule applied to the e side of a pair is exactly (S1.8); the e' side is the same
rule when e' itself is drawn. This is what makes a minibatch cost O(B D) and the stream reproducible from
the generator alone.

Neighbours are found once, by a blocked exact search (:func:`nearest_neighbours`): lower bounds of the
distances in a principal subspace rule out almost every row, the few left are compared exactly.
"""
import time

import numpy as np

from .._validation import as_float_array, check_generator, check_in_range, check_positive_int
from .compression import DatasetGenerator


def nearest_neighbours(data, block=512, dims=128, chunk=64):
    """Index of each row's nearest other row (Euclidean), shape (n,); ties go to the lowest index. Exact.

    Measured on MNIST's 60,000 x 784 training images with ``OMP_NUM_THREADS=1``: 35 s (51 s when the
    shared 2-core machine was busier), identical to the brute force on 300 random rows checked.
    A brute-force search of 60,000 x 784 costs 5.6e12 flops (minutes on one core), so distances are
    first bounded from below in a ``dims``-dimensional principal subspace: with V orthonormal (D, k),
    ||V^T (a - b)|| <= ||a - b||. For every query row (``block`` at a time, float32 (block, n) bounds),
    the row with the smallest bound gives an exact float64 distance d*, and only the rows whose bound
    falls below d* (plus a margin covering float32 rounding) can be nearer: their distances are computed
    exactly, by differences, and the smallest wins. The answer is therefore that of the plain search
    (:func:`reference_nearest_neighbours`), only the work differs.

    Parameters
    ----------
    data : ndarray of shape (n, D), n >= 2
    block : int
        Query rows per block (memory: block x n float32; 512 x 60,000 = 123 MB).
    dims : int
        Dimension of the bounding subspace (all of D when D <= dims: then the bound is the distance).
    chunk : int
        Query rows whose surviving candidates are compared together (memory: their count x D float64).

    Returns
    -------
    ndarray of int of shape (n,)
    """
    data = as_float_array(data, "data", ndim=2)
    n, D = data.shape
    if n < 2:
        raise ValueError(f"data: expected at least 2 rows (each needs a neighbour), received {n}")
    block, dims, chunk = (check_positive_int(block, "block"), check_positive_int(dims, "dims"),
                          check_positive_int(chunk, "chunk"))
    centred = data - data.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    z = (centred @ vecs[:, -min(dims, D):]).astype(np.float32)             # projections: distances bounded below
    z_sq = np.einsum("ij,ij->i", z, z)
    margin = 1e-5 * 2 * float(np.max(z_sq)) + 1e-30                       # >> float32 rounding of the expanded form
    minus_2z = -2 * z
    out = np.empty(n, dtype=np.intp)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = np.arange(start, stop)
        # ||z_i - z_j||^2 - |z_i|^2 = |z_j|^2 - 2 z_i . z_j: the row constant |z_i|^2 is added to the threshold
        # instead, so the (block, n) array is written by the product and passed over once more only
        bound = minus_2z[start:stop] @ z.T
        bound += z_sq[None, :]
        bound[rows - start, rows] = np.inf                                    # not its own neighbour
        first = np.argmin(bound, axis=1)
        best = np.sum((data[first] - data[start:stop]) ** 2, axis=1)
        threshold = best - z_sq[start:stop] + margin
        for c0 in range(0, stop - start, chunk):
            sub = slice(c0, min(c0 + chunk, stop - start))
            q, cand = np.nonzero(bound[sub] <= threshold[sub, None])
            q = q + c0
            dist = np.sum((data[cand] - data[start + q]) ** 2, axis=1)
            order = np.lexsort((cand, dist, q))                              # by query, then distance, then index
            q, cand = q[order], cand[order]
            head = np.ones(q.size, dtype=bool)
            head[1:] = q[1:] != q[:-1]
            out[start + q[head]] = cand[head]
    return out


def reference_nearest_neighbours(data):
    """The plain twin of :func:`nearest_neighbours`: all pairwise float64 distances by differences (small n only)."""
    data = as_float_array(data, "data", ndim=2)
    d = np.sum((data[:, None, :] - data[None, :, :]) ** 2, axis=2)
    np.fill_diagonal(d, np.inf)
    return np.argmin(d, axis=1)


def munge(data, neighbours, rows, p, s, rng):
    """MUNGE pseudo-examples (S1.8) for the given rows of ``data``: shape (len(rows), D).

    Each attribute of e = data[r] is, with probability p, replaced by a draw from
    N(e'_a, (|e_a - e'_a| / s)^2), e' = data[neighbours[r]]; otherwise kept.

    Parameters
    ----------
    data : ndarray of shape (n, D)
    neighbours : ndarray of int of shape (n,)
        From :func:`nearest_neighbours`.
    rows : ndarray of int of shape (B,)
    p : float in [0, 1]
    s : float > 0
    rng : numpy.random.Generator
    """
    p = check_in_range(p, "p", 0.0, 1.0)
    s = check_in_range(s, "s", 0.0, np.inf, low_open=True, high_open=True)
    rng = check_generator(rng)
    e = data[rows]
    e_nn = data[neighbours[rows]]
    swap = rng.random(e.shape) < p
    draw = rng.normal(e_nn, np.abs(e - e_nn) / s)
    return np.where(swap, draw, e)


class MungeGenerator(DatasetGenerator):
    """Minibatches of MUNGE pseudo-data (S1.8), beside ``DatasetGenerator``, ``NADEGenerator``, ``NoiseGenerator`` (2.21).

    The examples to perturb are drawn by ``DatasetGenerator`` itself (passes over the data, reshuffled
    after each), and each is perturbed afresh every time it is drawn, so the stream multiplies the data
    set without storing copies. The one generator serves both, so ``state()`` (the drawer's) resumes both.

    Parameters
    ----------
    data : ndarray of shape (n, D), n >= 2
    p : float in [0, 1]
        Swap probability per attribute.
    s : float > 0
        Local-variance divisor.
    batch_size : int
    rng : numpy.random.Generator
    neighbours : ndarray of int of shape (n,), optional
        Cached :func:`nearest_neighbours` of ``data`` (computed here otherwise; ``neighbour_seconds`` says how long).

    Attributes
    ----------
    dim, n, batch_size, examples_drawn, passes (``DatasetGenerator``'s), neighbours, neighbour_seconds
    """

    def __init__(self, data, p, s, batch_size, rng, neighbours=None):
        self.data = as_float_array(data, "data", ndim=2)
        if self.data.shape[0] < 2:
            raise ValueError(f"data: expected at least 2 rows (each needs a neighbour), received {self.data.shape[0]}")
        self.p = check_in_range(p, "p", 0.0, 1.0)
        self.s = check_in_range(s, "s", 0.0, np.inf, low_open=True, high_open=True)
        self.rng = check_generator(rng)
        check_positive_int(batch_size, "batch_size")            # before the neighbour search, not after
        n = self.data.shape[0]
        if neighbours is None:
            start = time.perf_counter()
            neighbours = nearest_neighbours(self.data)
            self.neighbour_seconds = time.perf_counter() - start
        else:
            neighbours = np.asarray(neighbours)
            if (neighbours.shape != (n,) or not np.issubdtype(neighbours.dtype, np.integer)
                    or neighbours.min() < 0 or neighbours.max() >= n or np.any(neighbours == np.arange(n))):
                raise ValueError(f"neighbours: expected an integer array of shape ({n},) with entries in [0, {n}) "
                                 f"and none its own index, received dtype {neighbours.dtype}, shape {neighbours.shape}")
            self.neighbour_seconds = 0.0
        self.neighbours = neighbours.astype(np.intp)
        super().__init__(self.data, batch_size, self.rng)

    def __call__(self):
        return munge(self.data, self.neighbours, self.next_indices(), self.p, self.s, self.rng)
