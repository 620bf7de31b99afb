"""Spark + Delta Lake on MinIO (s3a) and on a local path, via infra.spark.get_spark."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pyspark import SparkFiles

from infra.errors import InfraError
from infra.s3 import delta_storage_options, s3_client
from infra.spark import SparkService, _artifact, pyspark_jars_dir, spark_conf, to_spark_path
from lambdarec.settings import Settings

pytestmark = pytest.mark.integration

ROWS = [(1, "u1", 0.5), (2, "u2", 1.5), (3, "u3", 2.5)]
MORE = [(4, "u4", 3.5)]
COLS = ["id", "user", "score"]


def _rows(df) -> list[tuple]:  # type: ignore[no-untyped-def]
    return sorted(tuple(r) for r in df.select(*COLS).collect())


def _roundtrip(spark, path: str) -> None:  # type: ignore[no-untyped-def]
    """write v0, read back, append (v1), time-travel to v0."""
    spark.createDataFrame(ROWS, COLS).write.format("delta").mode("overwrite").save(path)
    assert _rows(spark.read.format("delta").load(path)) == sorted(ROWS)

    spark.createDataFrame(MORE, COLS).write.format("delta").mode("append").save(path)
    assert _rows(spark.read.format("delta").load(path)) == sorted(ROWS + MORE)

    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "operation").collect()
    assert max(h.version for h in history) == 1
    assert {h.operation for h in history} == {"WRITE"}

    v0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert _rows(v0) == sorted(ROWS)


@pytest.fixture
def s3_table(spark, settings: Settings):  # type: ignore[no-untyped-def]
    bucket = settings.s3.archive_bucket
    prefix = f"test-delta/{uuid.uuid4().hex}"
    yield f"s3://{bucket}/{prefix}"
    client = s3_client(settings)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


@pytest.mark.slow
def test_delta_on_s3(spark, settings: Settings, s3_table: str) -> None:  # type: ignore[no-untyped-def]
    path = to_spark_path(s3_table)
    assert path.startswith("s3a://")
    _roundtrip(spark, path)

    # the files really are in the bucket (not silently on a local filesystem)
    bucket, _, prefix = s3_table.removeprefix("s3://").partition("/")
    keys = [o["Key"] for o in s3_client(settings).list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert any(k.endswith("_delta_log/00000000000000000001.json") for k in keys)
    assert any(k.endswith(".parquet") for k in keys)

    # interoperability: delta-rs reads what Spark wrote, with storage options from settings
    from deltalake import DeltaTable

    dt = DeltaTable(s3_table, storage_options=delta_storage_options(settings))
    assert dt.version() == 1
    table = dt.to_pyarrow_table()
    assert sorted(zip(*(table.column(c).to_pylist() for c in COLS), strict=True)) == sorted(ROWS + MORE)
    dt.load_as_version(0)
    assert dt.to_pyarrow_table().num_rows == len(ROWS)


@pytest.mark.slow
def test_delta_on_local_path(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "events")
    assert to_spark_path(path) == path
    _roundtrip(spark, path)
    assert (tmp_path / "events" / "_delta_log" / "00000000000000000001.json").exists()


@pytest.mark.slow
def test_session_is_cached_and_configured(spark, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    from infra.spark import get_spark

    assert get_spark(settings) is spark
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.sql.shuffle.partitions") == str(settings.spark.shuffle_partitions)
    assert conf.get("spark.hadoop.fs.s3a.endpoint") == settings.s3.endpoint_url
    # a local driver has our jars on its class path; none is copied into the session's temp dir
    class_path = conf.get("spark.driver.extraClassPath")
    assert "delta-spark_" in class_path and "hadoop-aws-" in class_path
    assert conf.get("spark.jars", "") == ""
    copied = sum(f.stat().st_size for f in Path(SparkFiles.getRootDirectory()).rglob("*") if f.is_file())
    assert copied < 1_000_000, f"{copied} bytes copied into {SparkFiles.getRootDirectory()}"
    assert "spark.jars.packages" not in spark_conf(settings)
    assert conf.get("spark.jars.packages", None) is None
    # the class-data-sharing archive `infra up spark` trained is in use
    assert SparkService(settings).cds_ready()
    assert "-XX:SharedArchiveFile=" in conf.get("spark.driver.extraJavaOptions")


def test_service_status(settings: Settings) -> None:
    st = SparkService(settings).status()
    assert st.healthy, st.detail
    assert st.version.startswith("Spark 4.2.0 / Delta 4.")


def test_to_spark_path() -> None:
    assert to_spark_path("s3://b/lake/events") == "s3a://b/lake/events"
    assert to_spark_path("s3a://b/x") == "s3a://b/x"
    assert to_spark_path("/data/lake") == "/data/lake"
    assert to_spark_path(Path("/data/lake")) == "/data/lake"


def test_no_jar_duplicates_one_pyspark_ships(settings: Settings) -> None:
    svc = SparkService(settings)
    assert svc.is_installed(), "run `lambdarec infra up spark`"
    shipped = {_artifact(j.name) for j in pyspark_jars_dir().glob("*.jar")}
    ours = {_artifact(j.name) for j in svc.jars()}
    assert {"delta-spark_4.2_2.13", "delta-storage", "hadoop-aws", "bundle", "postgresql"} <= ours
    assert not ours & shipped
    # hadoop-aws must match the Hadoop that pyspark bundles
    (client,) = (j.name for j in pyspark_jars_dir().glob("hadoop-client-api-*.jar"))
    (aws,) = (j.name for j in svc.jars() if j.name.startswith("hadoop-aws-"))
    assert aws.removeprefix("hadoop-aws-") == client.removeprefix("hadoop-client-api-")


def test_artifact_names_for_duplicate_pruning() -> None:
    assert _artifact("parquet-hadoop-1.17.0.jar") == "parquet-hadoop"
    assert _artifact("delta-spark_4.2_2.13-4.4.0.jar") == "delta-spark_4.2_2.13"
    assert _artifact("zstd-jni-1.5.7-7.jar") == "zstd-jni"
    assert _artifact("netty-all-4.2.13.Final.jar") == "netty-all"


def test_missing_mvn_names_the_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    svc = SparkService(Settings(var_dir=tmp_path / "var"))
    assert not svc.is_installed() and not svc.ping()
    with pytest.raises(InfraError, match=r"'mvn' is not installed"):
        svc.install()
    assert not svc.jars_dir.exists()
