"""The item catalog: parse any supported source into validated items, then upsert them.

* :mod:`batch.catalog.readers` - MovieLens (ml-latest/ml-25m, ml-100k), JSONL and CSV parsers.
* :mod:`batch.catalog.model` - :class:`CatalogItem`, the typed intermediate, and ``content_hash``.
* :mod:`batch.catalog.store` - one-transaction COPY + upsert into ``items``/``genres``/``item_genres``.

Rules and decisions are documented in ``docs/embeddings.md``.
"""

from __future__ import annotations

from batch.catalog.model import CatalogError, CatalogItem, ParseIssue, ParseResult
from batch.catalog.readers import FORMATS, detect_format, parse_catalog

__all__ = [
    "FORMATS",
    "CatalogError",
    "CatalogItem",
    "ParseIssue",
    "ParseResult",
    "detect_format",
    "parse_catalog",
]
