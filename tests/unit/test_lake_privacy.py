"""batch/lake/gdpr.py helpers that need no services: Redis key matching, JSON export values."""

from __future__ import annotations

import fnmatch
from datetime import UTC, date, datetime

from batch.lake.gdpr import _glob_escape, _jsonable, redis_keys


class FakeRedis:
    """Just enough of redis.Redis for redis_keys: SCAN MATCH with Redis glob semantics."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = [k.encode() for k in keys]

    def scan_iter(self, match: str, count: int = 10):  # type: ignore[no-untyped-def]
        pattern = (
            match.replace("\\*", "\x00").replace("\\?", "\x01").replace("\\[", "\x02").replace("\\]", "\x03")
        )
        pattern = pattern.replace("\\\\", "\\")
        for k in self.keys:
            text = (
                k.decode().replace("*", "\x00").replace("?", "\x01").replace("[", "\x02").replace("]", "\x03")
            )
            if fnmatch.fnmatchcase(text, pattern):
                yield k


def test_redis_keys_match_whole_segments_only() -> None:
    r = FakeRedis(["profile:u1", "recs:u1:home", "u1", "profile:u10", "profile:xu1", "cache:u1x:a", "u2"])
    assert redis_keys(r, "u1") == [b"profile:u1", b"recs:u1:home", b"u1"]


def test_glob_characters_in_ids_are_literal() -> None:
    assert _glob_escape("a*b?[c]") == "a\\*b\\?\\[c\\]"
    r = FakeRedis(["profile:a*b", "profile:axxb"])
    assert redis_keys(r, "a*b") == [b"profile:a*b"]


def test_export_values_are_json_ready() -> None:
    when = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    got = _jsonable({b"k": [b"text", b"\xff\xfe", when, date(2025, 1, 2)], "n": 1})
    assert got == {"k": ["text", {"base64": "//4="}, "2025-01-02T03:04:00+00:00", "2025-01-02"], "n": 1}
