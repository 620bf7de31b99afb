"""Response bodies of the serving routes, for the OpenAPI document (answers are written with
orjson directly; these models describe them and carry the examples)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Source = Literal["realtime", "batch", "popular"]


class ErrorDetail(BaseModel):
    detail: Any = Field(description="what was wrong (a message, or FastAPI's field errors)")


class RecommendedItem(BaseModel):
    item_id: str
    title: str | None
    score: float = Field(description="blended score (higher is better; comparable within one list)")
    source: Source = Field(description="the source that contributed most to this item")
    explanation: str = Field(description='why: "because you watched X", "popular in Y", "trending now"')


class RecommendationList(BaseModel):
    rec_id: str = Field(description="uuid of this served list; send it back on feedback events")
    user_id: str
    items: list[RecommendedItem]
    algorithm_source: Literal["realtime", "batch", "popular", "hybrid", "cold_start"]
    model_version: str | None
    variant: str | None
    degraded: bool = Field(description="true when a backing store was slow/down and a fallback was served")
    cache_hit: bool
    computation_time_ms: float


REC_EXAMPLE = {
    "rec_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    "user_id": "u42",
    "items": [
        {
            "item_id": "movie-318",
            "title": "The Shawshank Redemption",
            "score": 0.91,
            "source": "realtime",
            "explanation": "because you watched The Green Mile",
        },
        {
            "item_id": "movie-1",
            "title": "Toy Story",
            "score": 0.42,
            "source": "popular",
            "explanation": "trending now",
        },
    ],
    "algorithm_source": "hybrid",
    "model_version": "als-20250131",
    "variant": None,
    "degraded": False,
    "cache_hit": False,
    "computation_time_ms": 7.8,
}


class SimilarItem(BaseModel):
    item_id: str
    title: str | None
    score: float = Field(description="cosine similarity (embedding) or dot product (ALS factors)")


class SimilarItems(BaseModel):
    item_id: str
    method: Literal["embedding", "als"]
    model_version: str | None
    items: list[SimilarItem]


class PopularItem(BaseModel):
    item_id: str
    title: str | None
    score: float
    explanation: str


class PopularItems(BaseModel):
    genre: str | None
    window: int = Field(description="days of popularity_metrics summed")
    items: list[PopularItem]
    degraded: bool


class Preferences(BaseModel):
    """A user's stated preferences and consents (user_profiles columns)."""

    favorite_genres: list[str] = Field(
        default_factory=list, max_length=20, description="genre slugs, e.g. drama, science-fiction"
    )
    diversity_preference: float = Field(0.5, ge=0, le=1)
    novelty_preference: float = Field(0.5, ge=0, le=1)
    algorithm_preference: str | None = Field(None, max_length=50)
    preferred_decade: int | None = Field(None, ge=1880, le=2200, multiple_of=10)
    data_usage_consent: bool = False
    allow_demographic_targeting: bool = True

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [
                {
                    "favorite_genres": ["drama", "comedy"],
                    "diversity_preference": 0.7,
                    "novelty_preference": 0.3,
                    "algorithm_preference": None,
                    "preferred_decade": 1990,
                    "data_usage_consent": True,
                    "allow_demographic_targeting": False,
                }
            ]
        },
    }

    @field_validator("diversity_preference", "novelty_preference")
    @classmethod
    def _storable(cls, v: float) -> float:
        """The columns are ``real``: 1e-121 would underflow (a 5xx); 4 decimals are plenty."""
        return round(v, 4)


class PreferencesOut(Preferences):
    user_id: str


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


def json_response(model: type[BaseModel], example: Any, description: str) -> dict[str, Any]:
    return {"model": model, "description": description, "content": {"application/json": {"example": example}}}


def error(description: str, example: str) -> dict[str, Any]:
    return json_response(ErrorDetail, {"detail": example}, description)
