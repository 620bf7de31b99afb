"""The served-list record matches what the lake archiver decodes from the served topic."""

from __future__ import annotations

import msgspec
import orjson

from schemas.served import ServedList
from serving.serve_log import log_record


def test_served_record_decodes_as_the_lake_expects() -> None:
    answer = {
        "rec_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "user_id": "u42",
        "items": [{"item_id": "m1", "title": "T", "score": 0.9, "source": "realtime", "explanation": "x"}],
        "algorithm_source": "hybrid",
        "model_version": "v1",
        "variant": None,
        "degraded": True,
        "cache_hit": False,
        "computation_time_ms": 3.2,
    }
    rec = log_record(answer)
    served = msgspec.json.decode(orjson.dumps(rec), type=ServedList)
    assert served.rec_id == answer["rec_id"] and served.items[0].item_id == "m1"
    assert served.items[0].source == "realtime" and served.served_at.tzinfo is not None
    assert served.context == {"degraded": True} and served.cache_hit is False
