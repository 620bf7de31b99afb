"""Human-readable reasons for recommended items.

Why separate from ranking: the wording is product copy that changes independently of the
order, and it needs item titles/genres which ranking does not.

>>> explain("realtime", anchor_title="Heat")
'because you watched Heat'
>>> explain("popular", genre="Drama")
'popular in Drama'
>>> explain("popular")
'trending now'
"""

from __future__ import annotations


def explain(
    source: str,
    *,
    anchor_title: str | None = None,
    genre: str | None = None,
    cold_start: bool = False,
) -> str:
    """The reason shown with an item, from the source that contributed most to its score."""
    if source == "realtime":
        if anchor_title:
            return f"because you watched {anchor_title}"
        return "based on what you watched recently"
    if source == "batch":
        if anchor_title:
            return f"because you watched {anchor_title}"
        return "picked for you from your viewing history"
    if genre:
        return f"popular in {genre}" + (" (one of your favourite genres)" if cold_start else "")
    return "trending now"
