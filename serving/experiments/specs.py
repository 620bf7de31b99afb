"""What an operator submits to create an experiment (API body and CLI file), validated up front.

Why strict (``extra="forbid"``): a typo in a variant config (``"diversty": 0.9``) would otherwise
be stored, served as the default algorithm and only discovered in a null result weeks later.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.experiments.stats import METRICS

Source = Literal["realtime", "batch", "popular"]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class VariantConfig(BaseModel):
    """An algorithm configuration; the keys :func:`serving.recommend.compute` reads."""

    model_config = ConfigDict(extra="forbid")

    blend_weights: dict[Source, Annotated[float, Field(ge=0)]] | None = Field(
        None, description="score weight per candidate source; missing sources weigh 0"
    )
    diversity: float | None = Field(None, ge=0, le=1, description="MMR diversity (overrides the user's)")
    novelty: float | None = Field(None, ge=0, le=1, description="novelty boost (overrides the user's)")
    model_version: str | None = Field(
        None, min_length=1, max_length=100, description="a model of the registry (recorded, see docs)"
    )

    @model_validator(mode="after")
    def _some_weight(self) -> VariantConfig:
        if self.blend_weights is not None and not any(w > 0 for w in self.blend_weights.values()):
            raise ValueError("blend_weights needs at least one positive weight")
        return self


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    traffic_percent: Annotated[Decimal, Field(gt=0, le=100, max_digits=5, decimal_places=2)]
    is_control: bool = False
    config: VariantConfig = Field(default_factory=VariantConfig)


class ExperimentSpec(BaseModel):
    """A new (draft) experiment with its variants."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "name": "more-diversity",
                "description": "Does MMR diversity 0.5 raise CTR?",
                "target_metric": "ctr",
                "minimum_sample_size": 2000,
                "confidence_level": 0.95,
                "minimum_detectable_effect": 0.05,
                "variants": [
                    {"name": "control", "traffic_percent": 50, "is_control": True},
                    {"name": "diverse", "traffic_percent": 50, "config": {"diversity": 0.5}},
                ],
            }
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_. -]+$")]
    description: str | None = Field(None, max_length=2000)
    target_metric: str = Field("ctr", description=f"one of {', '.join(METRICS)}")
    minimum_sample_size: int = Field(1000, gt=0, description="users per variant before a winner can be named")
    confidence_level: float = Field(0.95, ge=0.8, le=0.99)
    minimum_detectable_effect: float = Field(
        0.05, gt=0, le=10, description="relative lift the test should detect (sample size, power)"
    )
    power: float = Field(0.8, gt=0.5, lt=1)
    planned_end_at: datetime | None = None
    created_by: str | None = Field(None, max_length=128)
    variants: list[VariantSpec] = Field(min_length=2, max_length=20)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        if self.target_metric not in METRICS:
            raise ValueError(f"unknown target_metric {self.target_metric!r}; one of {', '.join(METRICS)}")
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique, repeated: {', '.join(dupes)}")
        if sum(v.is_control for v in self.variants) > 1:
            raise ValueError("at most one variant can be the control")
        total = sum(v.traffic_percent for v in self.variants)
        if total != 100:
            raise ValueError(f"traffic_percent of the variants must sum to 100, got {total}")
        return self
