"""Was this event applied to the user's state already? Two checks, kept in the user's record.

Why inside the per-user state record and not a separate ``seen_event_ids`` table: the changelog
writes of two tables are not atomic. A crash between "state updated" and "id remembered" would
re-apply an event on redelivery (or the reverse would lose one). One record per user carries
both the state and what it has absorbed, so either both are in the changelog or neither is.

* **Redelivery** (crash, rebalance, faust's double processing): a user's events all come from
  one partition, in offset order, so "offset <= last applied offset of that partition" is exact
  and needs no window at all.
* **Duplicate sends** (an SDK retry after a lost ack, a DLQ replay of an event that got through
  after all) have a new offset but the same ``event_id``: the last ``window`` ids of the user
  catch those, which arrive close together.

Postgres is idempotent on its own as well (primary keys + ``ON CONFLICT DO NOTHING``), so an id
that has left the window cannot double-count rows or counters, only the vectors.

>>> s = DedupeState()
>>> accept(s, b"a" * 16, partition=0, offset=5, window=2), accept(s, b"a" * 16, 0, 5, 2)
(True, False)
>>> accept(s, b"a" * 16, 0, 9, 2), accept(s, b"b" * 16, 0, 10, 2)
(False, True)
"""

from __future__ import annotations

from dataclasses import dataclass

ID_BYTES = 16


@dataclass
class DedupeState:
    """Last applied (partition, offset) and the most recent event ids (16 bytes each, oldest
    first) as one buffer: it is stored as is, so decoding a user's state costs nothing here."""

    partition: int = -1
    offset: int = -1
    ids: bytes = b""

    def seen(self, event_id: bytes) -> bool:
        buf = self.ids
        i = buf.find(event_id)
        while i != -1 and i % ID_BYTES:  # only matches on an id boundary count
            i = buf.find(event_id, i + 1)
        return i != -1


def accept(state: DedupeState, event_id: bytes, partition: int, offset: int, window: int) -> bool:
    """True (and remembered) if the event is new for this state; False if already applied."""
    if partition == state.partition and offset <= state.offset:
        return False
    state.partition, state.offset = partition, offset  # read either way
    if state.seen(event_id):
        return False  # a duplicate send
    ids = state.ids + event_id
    state.ids = ids[-window * ID_BYTES :] if len(ids) > window * ID_BYTES else ids
    return True
