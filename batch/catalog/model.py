"""The typed intermediate every catalog source is parsed into before anything is written.

Every parser (MovieLens, ml-100k, JSONL, CSV) produces :class:`CatalogItem` objects and
:class:`ParseIssue` records; only a fully parsed and validated catalog reaches the database, so a
broken line can never leave half a catalog behind. The :attr:`CatalogItem.content_hash` is what
makes re-imports cheap: an upsert only touches rows whose hash changed, and the embedder only
re-embeds items whose hash differs from the hash their vector was made from.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_WS = re.compile(r"\s+")


def _clean(s: str | None) -> str:
    """Collapse whitespace (CR/LF/tabs inside quoted fields included) and strip."""
    return _WS.sub(" ", s).strip() if s else ""


#: What :meth:`CatalogItem.embedding_text` reads, hence what :attr:`CatalogItem.content_hash` covers.
EMBEDDED_FIELDS = ("title", "original_title", "tagline", "overview", "genres", "tags")


def slugify(name: str) -> str:
    """``"Sci-Fi"`` -> ``"sci-fi"``, ``"Film-Noir"`` -> ``"film-noir"``; stable genre key."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class CatalogItem(BaseModel):
    """One item (movie) with the seed's catalog fields, validated.

    ``item_id`` is the source's own id (MovieLens ``movieId``, ml-100k ``movie id``, or the
    ``item_id``/``id`` of a JSONL/CSV row): interactions refer to items by it, so it is the upsert key.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False, frozen=False)

    item_id: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    title: str = Field(min_length=1, max_length=512)
    original_title: str = Field("", max_length=512)
    tagline: str = Field("", max_length=512)
    overview: str = Field("", max_length=20000)
    genres: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    release_date: date | None = None
    year: int | None = Field(None, ge=1870, le=2200)
    runtime: int | None = Field(None, ge=1, le=100000)
    director: str | None = Field(None, max_length=255)
    main_cast: list[str] = Field(default_factory=list)
    original_language: str = Field("", max_length=10)
    adult: bool = False
    tmdb_rating: float | None = Field(None, ge=0.0, le=10.0)
    tmdb_vote_count: int = Field(0, ge=0)
    omdb_rating: float | None = Field(None, ge=0.0, le=10.0)
    omdb_vote_count: int = Field(0, ge=0)
    popularity: float = Field(0.0, ge=0.0)
    poster_path: str = Field("", max_length=255)
    backdrop_path: str = Field("", max_length=255)
    tmdb_id: int | None = Field(None, ge=1, le=2**31 - 1)
    imdb_id: str | None = Field(None, pattern=r"^tt\d{5,10}$")
    movielens_id: int | None = Field(None, ge=1, le=2**31 - 1)
    source: str = Field("", max_length=64)

    @field_validator("item_id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        """Ids are text (the event contract's item_id is a string); integral numbers are accepted."""
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return v.strip() if isinstance(v, str) else v

    @field_validator("title", "original_title", "tagline", "overview", "original_language", mode="before")
    @classmethod
    def _strip(cls, v: Any) -> Any:
        return _clean(v) if isinstance(v, str) or v is None else v

    @field_validator("director", mode="before")
    @classmethod
    def _strip_opt(cls, v: Any) -> Any:
        if v is None:
            return None
        return _clean(v) or None if isinstance(v, str) else v

    @field_validator("main_cast", mode="after")
    @classmethod
    def _dedup_list(cls, v: list[str]) -> list[str]:
        """Clean, drop empties and duplicates, keep first-seen order (billing order matters)."""
        seen: dict[str, None] = {}
        for x in v:
            c = _clean(x)
            if c and c not in seen:
                seen[c] = None
        return list(seen)

    @field_validator("genres", mode="after")
    @classmethod
    def _genre_set(cls, v: list[str]) -> list[str]:
        """Genres are a set: sorted, so a re-ordered source line is not a change (and the
        database, which keeps them in item_genres without order, yields the same text)."""
        return sorted({c for c in (_clean(x) for x in v) if c})

    @field_validator("tags", mode="after")
    @classmethod
    def _norm_tags(cls, v: list[str]) -> list[str]:
        seen: dict[str, None] = {}
        for x in v:
            c = _clean(x).lower()
            if c and c not in seen:
                seen[c] = None
        return list(seen)

    @model_validator(mode="after")
    def _derive(self) -> CatalogItem:
        if self.release_date is not None:
            if self.year is None:
                self.year = self.release_date.year
            elif self.year != self.release_date.year:
                raise ValueError(
                    f"year {self.year} does not match release_date {self.release_date.isoformat()}"
                )
        if not self.original_title:
            self.original_title = self.title
        return self

    # ------------------------------------------------------------------ derived values

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex, 32 chars) of the fields the embedding is made from (:data:`EMBEDDED_FIELDS`).

        This is ``items.content_hash``: an item needs re-embedding exactly when it differs from
        ``items.embedding_content_hash``. It deliberately ignores popularity, vote counts, poster
        paths and the like, so refreshing those never costs an embedding; the upsert detects
        changes to those columns by comparing them directly. JSON with sorted keys keeps the hash
        stable across runs and Python versions.
        """
        payload = {k: getattr(self, k) for k in EMBEDDED_FIELDS}
        raw = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]

    def embedding_text(self) -> str:
        """The text an embedding provider sees (see :func:`embedding_text`)."""
        return embedding_text(
            self.title, self.original_title, self.tagline, self.overview, self.genres, self.tags
        )


def embedding_text(
    title: str,
    original_title: str | None,
    tagline: str | None,
    overview: str | None,
    genres: list[str],
    tags: list[str],
) -> str:
    """Title, original title, tagline, overview, genres and tags as one text.

    The importer (from a :class:`CatalogItem`) and the embedder (from database rows) both call
    this, so an item embeds the same whichever path produced it. Genres and tags are spelled out
    as words so a text model can relate "Sci-Fi" to "space"; the year is left out because it says
    little about similarity and would make TF-IDF cluster by decade.
    """
    parts = [title]
    if original_title and original_title != title:
        parts.append(original_title)
    if tagline:
        parts.append(tagline)
    if overview:
        parts.append(overview)
    if genres:
        parts.append("Genres: " + ", ".join(sorted(genres)) + ".")
    if tags:
        parts.append("Tags: " + ", ".join(tags) + ".")
    return " ".join(parts)


@dataclass(frozen=True)
class ParseIssue:
    """A problem with one line of one file: where (file, line, field) and what.

    ``skipped`` is True when the whole record was dropped; False for a field-level fix-up (e.g. a
    bad tmdbId in links.csv: the movie is kept without it).
    """

    file: str
    line: int
    field: str
    message: str
    skipped: bool = True

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        fld = f" [{self.field}]" if self.field else ""
        return f"{where}{fld}: {self.message}"


@dataclass
class ParseResult:
    """Everything a parser read: the valid items in source order and the issues it found."""

    items: list[CatalogItem] = field(default_factory=list)
    issues: list[ParseIssue] = field(default_factory=list)
    lines_read: int = 0
    files: list[str] = field(default_factory=list)
    fmt: str = ""

    @property
    def skipped(self) -> int:
        return sum(1 for i in self.issues if i.skipped)

    @property
    def warnings(self) -> int:
        return sum(1 for i in self.issues if not i.skipped)


class CatalogError(ValueError):
    """A catalog source that cannot be imported at all (missing/empty file, wrong encoding, ...).

    The message names the file and says what to do; nothing has been written when it is raised.
    """
