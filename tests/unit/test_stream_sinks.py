"""The speed layer's hand-built binary COPY fields (Postgres reads them back in
``tests/integration/test_stream_sink_copy.py``)."""

from __future__ import annotations

import numpy as np

from streams.sinks.postgres import vector_fields


def test_vector_fields_layout() -> None:
    v = np.array([1.0, -2.5, 3.25], dtype=np.float32)
    f = vector_fields([None, v, np.arange(2, dtype=np.float64)])
    assert f[0] == b"\xff\xff\xff\xff"
    assert f[1][:8] == (16).to_bytes(4, "big") + (3).to_bytes(2, "big") + b"\x00\x00"
    np.testing.assert_array_equal(np.frombuffer(f[1][8:], ">f4"), v)
    np.testing.assert_array_equal(np.frombuffer(f[2][8:], ">f4"), [0.0, 1.0])
