"""The taste-vector search folded into the profile statement
(:func:`serving.candidates.user_context_batch_and_ann`) against the real Postgres: the same ids,
in the same order, as :func:`serving.candidates.ann_ids` with the profile's vector, and no
search when the user does not consent, has no vector or one of another dimension."""

from __future__ import annotations

import pytest

from lambdarec.settings import Settings
from serving import candidates as cands
from serving.recommend import Services
from tests.integration.serving_support import World

pytestmark = pytest.mark.integration


async def test_folded_search_equals_the_separate_query(
    svc: Services, world: World, postgres: Settings
) -> None:
    dim = postgres.embedding.dim
    users = [world.user(preference_vector=world.emb[f"{world.p}i{i}"]) for i in (1, 6)]
    filters = [
        cands.ItemFilters(),
        cands.ItemFilters(world.genre),
        cands.ItemFilters(None, 1993, 1997),
        cands.ItemFilters(world.genre, 1995),
        cands.ItemFilters("no-such-genre"),
    ]
    async with svc.pool.connection() as conn:
        for user in users:
            for f in filters:
                for n in (3, 20):
                    ctx, _, _, ids = await cands.user_context_batch_and_ann(
                        conn, user, cands.AnnQuery(n, f, dim)
                    )
                    assert ctx.preference_vector is not None and ids is not None
                    want = await cands.ann_ids(conn, ctx.preference_vector, n, f)
                    assert ids == want, (user, f, n)
                    if f.genre == world.genre and n == 3 and f.year_from is None:
                        assert ids[0] == f"{world.p}i{1 if user == users[0] else 6}"
            # the profile part is the plain statement's
            p_ctx, p_batch, p_version, p_ids = await cands.user_context_batch_and_ann(conn, user)
            ctx, batch, version, _ = await cands.user_context_batch_and_ann(
                conn, user, cands.AnnQuery(5, filters[0], dim)
            )
            assert p_ids is None and (p_batch, p_version) == (batch, version)
            assert (p_ctx.consent, p_ctx.seen, p_ctx.recent) == (ctx.consent, ctx.seen, ctx.recent)
            assert p_ctx.preference_vector is not None and ctx.preference_vector is not None
            assert (p_ctx.preference_vector == ctx.preference_vector).all()


async def test_no_search_without_consent_vector_or_matching_dimension(
    svc: Services, world: World, postgres: Settings
) -> None:
    dim = postgres.embedding.dim
    no_consent = world.user(data_usage_consent=False, preference_vector=world.emb[f"{world.p}i2"])
    no_vector = world.user()
    ok = world.user(preference_vector=world.emb[f"{world.p}i2"])
    q = cands.AnnQuery(5, cands.ItemFilters(), dim)
    async with svc.pool.connection() as conn:
        assert (await cands.user_context_batch_and_ann(conn, no_consent, q))[3] is None
        assert (await cands.user_context_batch_and_ann(conn, no_vector, q))[3] is None
        assert (await cands.user_context_batch_and_ann(conn, f"{world.p}nobody", q))[3] is None
        other_dim = cands.AnnQuery(5, cands.ItemFilters(), dim + 1)
        assert (await cands.user_context_batch_and_ann(conn, ok, other_dim))[3] is None
        assert (await cands.user_context_batch_and_ann(conn, ok, q))[3]
        assert (await cands.user_context_batch_and_ann(conn, ok))[3] is None
