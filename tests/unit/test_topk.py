"""batch/topk.py: exact top-K equal to a stable brute-force sort, seen items excluded, any layout."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from batch.topk import _select_block, chunk_size, topk_blocked, topk_bruteforce, topk_factors


def _factors(
    rng: np.random.Generator, nu: int, ni: int, r: int, *, integer: bool
) -> tuple[np.ndarray, np.ndarray]:
    if integer:  # small integers: many exactly tied scores
        return (
            rng.integers(-2, 3, (nu, r)).astype(np.float32),
            rng.integers(-2, 3, (ni, r)).astype(np.float32),
        )
    return rng.standard_normal((nu, r)).astype(np.float32), rng.standard_normal((ni, r)).astype(np.float32)


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize(
    ("nu", "ni", "k"), [(50, 300, 10), (7, 1000, 50), (30, 40, 40), (5, 3, 10), (1, 1, 1)]
)
def test_equals_bruteforce(integer: bool, nu: int, ni: int, k: int) -> None:
    rng = np.random.default_rng(nu * 1000 + ni + k)
    u, v = _factors(rng, nu, ni, 4, integer=integer)
    idx, scores = topk_factors(u, v, k, memory_mb=0.01)
    ref = topk_bruteforce(u @ v.T, k)
    np.testing.assert_array_equal(idx, ref)
    full = u @ v.T
    valid = idx >= 0
    np.testing.assert_allclose(scores[valid], np.take_along_axis(full, np.where(valid, idx, 0), 1)[valid])


def test_ties_prefer_lower_item_index() -> None:
    u = np.ones((2, 1), np.float32)
    v = np.array([[1], [3], [3], [2], [3]], np.float32)  # items 1, 2, 4 tie at the top
    idx, _ = topk_factors(u, v, 2)
    assert idx.tolist() == [[1, 2], [1, 2]]
    idx, _ = topk_factors(u, v, 4)
    assert idx.tolist()[0] == [1, 2, 4, 3]


def test_tie_straddling_the_cut_across_chunks() -> None:
    """k-th score tied by items in chunks that are not the top-k chunks must still be found."""
    n, k = 400, 5
    c = chunk_size(n, k)
    scores = np.zeros((1, n), np.float32)
    scores[0, [399, 398, 397, 396]] = 2.0  # four clear winners, high indices
    scores[0, [3, 250, 1]] = 1.0  # tie for the 5th place: item 1 must win
    npad = -(-n // c) * c
    padded = np.full((1, npad), -np.inf, np.float32)
    padded[:, :n] = scores
    idx, top = _select_block(padded, k, c)
    assert idx.tolist() == [[396, 397, 398, 399, 1]]
    assert top.tolist() == [[2, 2, 2, 2, 1]]


def test_seen_items_excluded_and_rows_padded() -> None:
    rng = np.random.default_rng(3)
    u, v = _factors(rng, 40, 60, 3, integer=False)
    seen = sp.random(40, 60, density=0.3, format="lil", random_state=4)
    seen[0, :] = 1.0  # user 0 has seen everything
    seen[1, :] = 1.0
    seen[1, :2] = 0.0  # user 1 has two candidates left
    seen = sp.csr_matrix(seen)
    seen.eliminate_zeros()
    idx, scores = topk_factors(u, v, 10, exclude=seen, memory_mb=0.005)
    np.testing.assert_array_equal(idx, topk_bruteforce(u @ v.T, 10, seen))
    assert (idx[0] == -1).all() and np.isneginf(scores[0]).all()
    assert sorted(idx[1, :2].tolist()) == [0, 1] and (idx[1, 2:] == -1).all()
    for row in range(40):
        got = set(idx[row][idx[row] >= 0].tolist())
        assert not got & set(seen[row].indices.tolist())


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("memory_mb", [0.001, 0.05, 64])
def test_block_size_and_threads_do_not_change_results(n_threads: int, memory_mb: float) -> None:
    rng = np.random.default_rng(11)
    u, v = _factors(rng, 300, 500, 5, integer=True)
    ref = topk_bruteforce(u @ v.T, 20)
    idx, _ = topk_factors(u, v, 20, memory_mb=memory_mb, n_threads=n_threads)
    np.testing.assert_array_equal(idx, ref)


def test_generic_score_function_matches_factor_path() -> None:
    rng = np.random.default_rng(5)
    u, v = _factors(rng, 33, 77, 4, integer=False)
    dense = u @ v.T
    idx, _ = topk_blocked(lambda a, b: dense[a:b], 33, 77, 9, memory_mb=0.001)
    np.testing.assert_array_equal(idx, topk_factors(u, v, 9)[0])


def test_rejects_bad_arguments() -> None:
    u = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="rank mismatch"):
        topk_factors(u, np.ones((4, 2), np.float32), 2)
    with pytest.raises(ValueError, match="k must be"):
        topk_factors(u, np.ones((4, 3), np.float32), 0)
    with pytest.raises(ValueError, match="exclude has shape"):
        topk_factors(u, np.ones((4, 3), np.float32), 2, exclude=sp.csr_matrix((3, 4)))


def test_empty_user_set() -> None:
    idx, scores = topk_factors(np.zeros((0, 3), np.float32), np.ones((5, 3), np.float32), 3)
    assert idx.shape == (0, 3) and scores.shape == (0, 3)
