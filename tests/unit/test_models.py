"""batch/models: EASE closed form, numpy implicit ALS, popularity, the shared recommend()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from batch.models import EASE, ImplicitALS, Popularity


def _blocks(n_blocks: int = 3, users: int = 12, items: int = 8) -> tuple[sp.csr_matrix, list[int]]:
    """Users of block b consumed all items of block b except one held-out item each."""
    rows, cols, held = [], [], []
    for b in range(n_blocks):
        for j in range(users):
            u = b * users + j
            out = b * items + j % items
            held.append(out)
            for i in range(b * items, (b + 1) * items):
                if i != out:
                    rows.append(u)
                    cols.append(i)
    X = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_blocks * users, n_blocks * items))
    return X, held


def test_ease_recovers_block_structure() -> None:
    X, held = _blocks()
    idx, scores = EASE(lam=1.0).fit(X).recommend(k=1)
    assert idx[:, 0].tolist() == held  # the one unseen in-block item comes first for everyone
    assert (scores[:, 0] > 0).all()


def test_ease_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    X = sp.random(60, 25, density=0.2, format="csr", random_state=1)
    X.data[:] = 1.0
    lam = 7.0
    m = EASE(lam=lam).fit(X)
    G = (X.T @ X).toarray() + lam * np.eye(25)
    P = np.linalg.inv(G)
    B = np.eye(25) - P / np.diag(P)
    np.testing.assert_allclose(m.B, B, atol=1e-5)
    assert np.allclose(np.diag(m.B), 0)
    users = rng.choice(60, 10, replace=False)
    np.testing.assert_allclose(m.score(users), X[users].toarray() @ B, atol=1e-5)


def test_ease_float32_path_for_large_catalogs(monkeypatch: pytest.MonkeyPatch) -> None:
    import batch.models.ease as ease_mod

    monkeypatch.setattr(ease_mod, "FLOAT64_MAX_ITEMS", 10)  # force the float32 branch on small data
    X, held = _blocks(n_blocks=4, users=10, items=30)
    idx, _ = EASE(lam=1.0).fit(X).recommend(k=1)
    assert idx[:, 0].tolist() == held


def test_ease_refuses_huge_catalogs() -> None:
    with pytest.raises(ValueError, match="ease_max_items"):
        EASE(max_items=10).fit(sp.csr_matrix((3, 11)))


def test_ease_symmetrises_across_mirror_blocks() -> None:
    """More than 1024 items: the blocked upper->lower mirror must give the same B as numpy."""
    rng = np.random.default_rng(2)
    n = 1100
    X = sp.random(300, n, density=0.02, format="csr", random_state=3)
    X.data[:] = 1.0
    m = EASE(lam=5.0).fit(X)
    P = np.linalg.inv((X.T @ X).toarray() + 5.0 * np.eye(n))
    B = np.eye(n) - P / np.diag(P)
    cols = rng.choice(n, 50, replace=False)
    np.testing.assert_allclose(m.B[:, cols], B[:, cols], atol=1e-5)


def test_ials_recovers_block_structure_and_is_deterministic() -> None:
    X, held = _blocks()
    a = ImplicitALS(rank=3, reg_param=0.01, alpha=5.0, max_iter=10, seed=1).fit(X)
    b = ImplicitALS(rank=3, reg_param=0.01, alpha=5.0, max_iter=10, seed=1).fit(X)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    idx, _ = a.recommend(k=1)
    n_items = X.shape[1] // 3
    blocks = idx[:, 0] // n_items
    assert blocks.tolist() == [u // 12 for u in range(X.shape[0])]  # always an in-block item
    assert np.mean(idx[:, 0] == np.array(held)) == 1.0


def test_ials_solution_is_a_fixed_point_of_the_normal_equations() -> None:
    """After a user half-step, each x_u solves (YᵀC_uY + λ n_u I) x_u = YᵀC_u p_u exactly."""
    rng = np.random.default_rng(4)
    X = sp.random(30, 20, density=0.3, format="csr", random_state=5)
    X.data = rng.integers(1, 5, X.nnz).astype(np.float64)
    m = ImplicitALS(rank=4, reg_param=0.2, alpha=2.0, max_iter=3).fit(X)
    Y = m.item_factors.astype(np.float64)
    U = m._solve(sp.csr_matrix(X), m.item_factors)
    for u in range(30):
        row = X[u].toarray().ravel()
        c = 1 + 2.0 * row
        p = (row > 0).astype(float)
        A = Y.T @ (c[:, None] * Y) + 0.2 * p.sum() * np.eye(4)
        if p.sum() == 0:
            assert not U[u].any()
            continue
        np.testing.assert_allclose(U[u], np.linalg.solve(A, Y.T @ (c * p)), rtol=1e-4, atol=1e-5)


def test_popularity_and_exclude_seen() -> None:
    X = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 0], [0, 0, 1, 0]], dtype=float))
    pop = Popularity().fit(X)
    idx, _ = pop.recommend(k=4, exclude_seen=False)
    assert idx[0].tolist() == [0, 2, 1, 3]  # 3, 3 (tie: lower index), 1, 0 interactions
    idx, _ = pop.recommend(np.array([0, 3]), k=2)
    assert idx.tolist() == [[2, 3], [0, 1]]


def test_fit_required_before_recommend() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        EASE().recommend(k=1)


def test_factor_model_to_snapshot_records_fold_in_params(tmp_path: Path) -> None:
    from schemas.model_snapshot import load_item_factors, save_snapshot

    X, _ = _blocks()
    m = ImplicitALS(rank=3, reg_param=0.2, alpha=4.0, max_iter=2).fit(X)
    users = np.array([f"u{i}" for i in range(X.shape[0])], dtype=object)
    items = np.array([f"i{i}" for i in range(X.shape[1])], dtype=object)
    snap = m.to_snapshot("v1", users, items, metrics={"ndcg@10": 0.4}, extra_params={"max_confidence": 100.0})
    save_snapshot(snap, str(tmp_path))
    ids, factors, manifest = load_item_factors(str(tmp_path))
    assert ids.tolist() == items.tolist()
    np.testing.assert_array_equal(factors, m.item_factors)
    p = manifest["params"]
    assert (p["alpha"], p["reg_param"], p["scale_reg"], p["max_confidence"]) == (4.0, 0.2, True, 100.0)
    assert manifest["algorithm"] == "ials" and manifest["metrics"] == {"ndcg@10": 0.4}
