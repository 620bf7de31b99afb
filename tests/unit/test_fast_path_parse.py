"""``serving.fast_path.parse``: which requests the fast path takes (only surely valid ones)."""

from __future__ import annotations

import pytest

from serving.fast_path import parse

P = "/v1/users/u42/recommendations"


def test_plain_and_full_requests_are_parsed() -> None:
    assert parse(P, b"") == {"user_id": "u42"}
    assert parse(P, b"k=5&genre=Drama&year_from=1990&year_to=2000&exclude_seen=false&variant=b.1") == {
        "user_id": "u42",
        "k": 5,
        "genre": "Drama",
        "year_from": 1990,
        "year_to": 2000,
        "exclude_seen": False,
        "variant": "b.1",
    }
    assert parse("/v1/users/wu1~x.y-z/recommendations", b"exclude_seen=1")["exclude_seen"] is True  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/users/u 1/recommendations", b""),  # whitespace in the id
        ("/v1/users/\u00fc/recommendations", b""),  # non-ASCII: FastAPI decides
        ("/v1/users/" + "a" * 129 + "/recommendations", b""),
        ("/v1/users//recommendations", b""),
        ("/v1/users/u1/recommendations/", b""),
        (P, b"k=0"),
        (P, b"k=101"),
        (P, b"k=05"),
        (P, b"k=+5"),
        (P, b"k="),
        (P, b"k=5&k=6"),  # repeated
        (P, b"year_from=1799"),
        (P, b"exclude_seen=yes"),  # valid for FastAPI, but not this parser's business
        (P, b"genre="),
        (P, b"genre=" + b"a" * 101),
        (P, b"variant=a%20b"),
        (P, b"junk=1"),
        (P, b"user_id=u1"),
    ],
)
def test_anything_unusual_goes_on_to_fastapi(path: str, query: bytes) -> None:
    assert parse(path, query) is None
