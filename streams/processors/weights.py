"""What one event is worth to a user's taste: the event-type weight, or the rating's.

Why one function for both layers' conventions: the batch layer turns events into implicit
confidence with the same rule (``batch/interactions.py``, documented on ``BatchSettings``), and
the fold-in must agree with how the model it folds into was trained.

>>> w = EventWeights({"view": 1.0, "dislike": -4.0}, rate_weight=4.0)
>>> w.of("view"), w.of("dislike"), w.of("rate", 5.0), w.of("rate", 1.0), w.of("rate", 3.0), w.of("share")
(1.0, -4.0, 4.0, -4.0, 0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lambdarec.settings import Settings


@dataclass(frozen=True)
class EventWeights:
    """``by_type[type]`` for implicit events; ``rate_weight * (rating - 3) / 2`` for ``rate``
    (5 stars = +rate_weight, 1 star = -rate_weight). Unknown types weigh 0 (ignored)."""

    by_type: Mapping[str, float] = field(default_factory=dict)
    rate_weight: float = 4.0

    def of(self, event_type: str, rating: float | None = None) -> float:
        if event_type == "rate":
            return 0.0 if rating is None else self.rate_weight * (rating - 3.0) / 2.0
        return float(self.by_type.get(event_type, 0.0))


def taste_weights(settings: Settings) -> EventWeights:
    """Weights of the content taste vector: ``stream.*`` when set, else the batch layer's."""
    st, bt = settings.stream, settings.batch
    return EventWeights(
        dict(st.event_weights if st.event_weights is not None else bt.event_weights),
        st.rate_weight if st.rate_weight is not None else bt.rate_weight,
    )


def confidence_weights(settings: Settings) -> EventWeights:
    """Weights of the ALS fold-in: always the batch layer's (the model was trained with them)."""
    return EventWeights(dict(settings.batch.event_weights), settings.batch.rate_weight)
