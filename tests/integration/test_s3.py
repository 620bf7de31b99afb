"""MinIO (or the configured S3 store) through infra.s3.s3_client, plus MinioService's bad-input errors."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from infra.errors import InfraError
from infra.minio import MinioService, drive_space_problem, ldflags_for
from infra.s3 import s3_client
from lambdarec.settings import Settings
from tests.ports import free_port

pytestmark = pytest.mark.integration


def test_buckets_exist(s3: Settings) -> None:
    names = {b["Name"] for b in s3_client(s3).list_buckets()["Buckets"]}
    assert {s3.s3.archive_bucket, s3.s3.models_bucket} <= names


def test_put_get_list_delete(s3: Settings) -> None:
    client = s3_client(s3)
    bucket = s3.s3.archive_bucket
    prefix = f"test-s3/{uuid.uuid4().hex}/"
    body = b"lambdarec \x00\xff payload " * 1000
    client.put_object(Bucket=bucket, Key=prefix + "a.bin", Body=body)
    client.put_object(Bucket=bucket, Key=prefix + "b.txt", Body=b"b")
    try:
        assert client.get_object(Bucket=bucket, Key=prefix + "a.bin")["Body"].read() == body
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        assert sorted(o["Key"] for o in listed["Contents"]) == [prefix + "a.bin", prefix + "b.txt"]
        assert {o["Key"]: o["Size"] for o in listed["Contents"]}[prefix + "a.bin"] == len(body)
    finally:
        client.delete_object(Bucket=bucket, Key=prefix + "a.bin")
        client.delete_object(Bucket=bucket, Key=prefix + "b.txt")
    assert client.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0
    with pytest.raises(ClientError) as err:
        client.get_object(Bucket=bucket, Key=prefix + "a.bin")
    assert err.value.response["Error"]["Code"] == "NoSuchKey"


def test_bootstrap_is_idempotent(s3: Settings) -> None:
    svc = MinioService(s3)
    svc.bootstrap()
    svc.bootstrap()
    assert svc.ping()


def test_wrong_secret_is_not_healthy(s3: Settings) -> None:
    bad = s3.model_copy(deep=True)
    bad.s3.secret_key = "not-the-secret"
    svc = MinioService(bad)
    assert not svc.ping()
    assert "LAMBDAREC_S3__SECRET_KEY" in svc._last_error


def test_status_reports_version_pid_memory(s3: Settings) -> None:
    st = MinioService(s3).status()
    assert st.healthy, st.detail
    if st.managed:
        assert st.pid is not None and st.rss_mb and st.rss_mb > 1
        assert st.version and "GOGET" not in st.version


def test_a_nearly_full_drive_is_named_before_minio_refuses_writes(tmp_path: Path) -> None:
    usage = shutil.disk_usage(tmp_path)
    free = usage.free
    assert (drive_space_problem(tmp_path, margin=0) == "") == (free >= 0.01 * usage.total)
    problem = drive_space_problem(tmp_path, margin=free + (1 << 30))
    assert f"{free / (1 << 30):.1f} GB free" in problem and "less than 1% is free" in problem
    assert "LAMBDAREC_VAR_DIR" in problem


# ---- bad input: no running MinIO needed ------------------------------------------------------


def _throwaway(tmp_path: Path, port: int, console_port: int) -> Settings:
    return Settings(
        var_dir=tmp_path / "var",
        s3={"endpoint_url": f"http://127.0.0.1:{port}", "console_port": console_port},
    )


def test_api_port_taken_names_the_setting(tmp_path: Path, listener: int) -> None:
    svc = MinioService(_throwaway(tmp_path, listener, free_port()))
    with pytest.raises(InfraError, match=rf"port {listener} \(LAMBDAREC_S3__ENDPOINT_URL\)"):
        svc.launch()
    assert svc.pidfile.read() is None


def test_console_port_taken_names_the_setting(tmp_path: Path, listener: int) -> None:
    svc = MinioService(_throwaway(tmp_path, free_port(), listener))
    with pytest.raises(InfraError, match=r"LAMBDAREC_S3__CONSOLE_PORT"):
        svc.launch()


def test_missing_go_names_the_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    svc = MinioService(_throwaway(tmp_path, free_port(), free_port()))
    assert not svc.is_installed()
    with pytest.raises(InfraError, match=r"'go' is not installed"):
        svc.install()
    assert not svc.binary.exists()


def test_ldflags_stamp_the_pinned_version() -> None:
    pseudo = ldflags_for("v0.0.0-20260212201848-7aac2a2c5b7c")
    assert "cmd.ReleaseTag=DEVELOPMENT.2026-02-12T20-18-48Z" in pseudo
    assert "cmd.CommitID=7aac2a2c5b7c" in pseudo
    release = ldflags_for("RELEASE.2025-10-15T17-29-55Z")
    assert "cmd.Version=2025-10-15T17:29:55Z" in release
    assert "cmd.ReleaseTag=RELEASE.2025-10-15T17-29-55Z" in release
    assert ldflags_for("master") == "-s -w"
