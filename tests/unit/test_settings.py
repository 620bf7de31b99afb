"""Settings: env vars override defaults, derived paths fill in, bad values name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lambdarec.settings import PROJECT_ROOT, Settings


@pytest.fixture(autouse=True)
def _no_lambdarec_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about defaults and env parsing: start from an environment without overrides."""
    import os

    for k in list(os.environ):
        if k.startswith("LAMBDAREC_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(PROJECT_ROOT.parent)  # no .env file from the working directory


def test_defaults_point_at_local_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDAREC_VAR_DIR", str(tmp_path))
    s = Settings()
    assert s.kafka.managed and s.postgres.managed and s.redis.managed and s.s3.managed
    assert s.var_dir == tmp_path.resolve()
    assert s.spark.jars_dir == tmp_path.resolve() / "spark-jars"
    assert s.lake.root == str(tmp_path.resolve() / "lake")
    assert s.postgres.port == 5433 and s.kafka.port == 9092


def test_env_points_everything_at_external_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "LAMBDAREC_KAFKA__MANAGED": "false",
        "LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS": "b1.example:9092,b2.example:9092",
        "LAMBDAREC_POSTGRES__URL": "postgresql://u:p@db.example:6543/recs",
        "LAMBDAREC_REDIS__URL": "rediss://cache.example:6390/2",
        "LAMBDAREC_S3__ENDPOINT_URL": "https://s3.eu-west-1.amazonaws.com",
        "LAMBDAREC_SPARK__MASTER": "spark://spark-master:7077",
        "LAMBDAREC_LAKE__ROOT": "s3://my-lake/lambdarec",
        "LAMBDAREC_EMBEDDING__DIM": "384",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert not s.kafka.managed
    assert s.kafka.port == 9092 and "b2.example" in s.kafka.bootstrap_servers
    assert s.postgres.port == 6543
    assert s.redis.port == 6390
    assert s.s3.port == 443
    assert s.spark.master == "spark://spark-master:7077"
    assert s.lake.root == "s3://my-lake/lambdarec"
    assert s.embedding.dim == 384


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS", "localhost", "LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS"),
        ("LAMBDAREC_POSTGRES__URL", "mysql://x@y/z", "LAMBDAREC_POSTGRES__URL"),
        ("LAMBDAREC_REDIS__URL", "http://x", "LAMBDAREC_REDIS__URL"),
        ("LAMBDAREC_S3__ENDPOINT_URL", "minio:9000", "LAMBDAREC_S3__ENDPOINT_URL"),
        ("LAMBDAREC_EMBEDDING__DIM", "3", "dim"),
        ("LAMBDAREC_API__PORT", "70000", "port"),
    ],
)
def test_bad_setting_names_itself(monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert needle in str(exc.value)


def test_as_env_reproduces_settings_built_in_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round trip: a child process given ``as_env()`` reads back the very same settings."""
    base = Settings(_env_file=None)
    s = base.model_copy(
        update={
            "var_dir": tmp_path.resolve(),
            "kafka": base.kafka.model_copy(update={"topic_prefix": "t123.", "managed": False}),
            "postgres": base.postgres.model_copy(update={"url": "postgresql://u:p%40ss@db:6543/scratch_1"}),
            "batch": base.batch.model_copy(
                update={
                    "runs_dir": tmp_path / "runs",
                    "gate_max_regression": 0.2,
                    "event_weights": {**base.batch.event_weights, "view": 0.25},
                    "als": base.batch.als.model_copy(update={"rank": 7, "reg_param": 0.35}),
                }
            ),
            "serving": base.serving.model_copy(
                update={"blend_weights": {"realtime": 0.1, "batch": 0.8, "popular": 0.1}}
            ),
        }
    )
    env = s.as_env()
    assert env["LAMBDAREC_BATCH__ALS__RANK"] == "7" and env["LAMBDAREC_KAFKA__MANAGED"] == "false"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    back = Settings(_env_file=None)
    assert back == s
    assert back.model_dump() == s.model_dump()
    assert base != s  # the test compares something
