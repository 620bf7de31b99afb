"""The speed layer's processing steps, one module per concern, each a small function of
(event(s), state) that unit tests call without a broker: :mod:`.weights` (what an event is
worth), :mod:`.dedupe` (was it applied already), :mod:`.taste` (content taste vector),
:mod:`.foldin` (ALS user factors), :mod:`.profiles` (a whole batch against per-user state)."""
