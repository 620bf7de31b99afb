"""The archiver against the real Kafka and MinIO: exactly once through crashes and an S3 outage.

Every test has its own topic prefix and lake root (tmp_path, or a fresh prefix in the archive
bucket). Crashes are real: the archiver is a ``lambdarec lake archive`` subprocess killed with
SIGKILL, either by itself at an env-var crash point or by the S3 fault proxy right when it is
about to PUT a Delta commit (all data files of that commit already uploaded).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from batch.lake.maintenance import vacuum
from batch.lake.storage import Lake
from lambdarec.settings import Settings
from schemas.lake import ARCHIVE_TABLES, SILVER_INTERACTIONS
from tests.integration.lake_support import (
    S3FaultProxy,
    assert_exactly_once,
    combine,
    delete_prefix,
    env_for,
    lake_settings,
    lake_topics,
    list_keys,
    produce_workload,
    workload,
)

pytestmark = pytest.mark.integration

LAMBDAREC = str(Path(sys.executable).with_name("lambdarec"))


def _archive(
    settings: Settings, *, crash: str | None = None, once: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_for(settings)}
    env.pop("LAMBDAREC_LAKE_CRASH_POINT", None)
    if crash:
        env["LAMBDAREC_LAKE_CRASH_POINT"] = crash
    args = [LAMBDAREC, "lake", "archive", "--log-level", "INFO"] + (["--once"] if once else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def local_lake(kafka: Settings, tmp_path: Path) -> Iterator[Settings]:
    s = lake_settings(
        kafka,
        str(tmp_path / "lake"),
        f"test.lake-{uuid.uuid4().hex[:10]}.",
        batch_max_rows=60,
        batch_max_seconds=5,
        advance_watermark=False,
        maintenance_interval_minutes=0,
    )
    with lake_topics(s):
        yield s


class S3Lake(NamedTuple):
    settings: Settings  # endpoint = the proxy
    prefix: str
    proxy: S3FaultProxy


@pytest.fixture
def s3_lake(kafka: Settings, s3: Settings) -> Iterator[S3Lake]:
    """(settings with an s3:// lake root behind a fault proxy, the prefix); cleaned up after."""
    bucket = s3.s3.archive_bucket
    prefix = f"test-lake/{uuid.uuid4().hex[:12]}"
    proxy = S3FaultProxy(s3.s3.endpoint_url)
    proxy.start()
    base = lake_settings(
        kafka,
        f"s3://{bucket}/{prefix}",
        f"test.lake-{uuid.uuid4().hex[:10]}.",
        batch_max_rows=60,
        batch_max_seconds=3,
        advance_watermark=False,
        maintenance_interval_minutes=0,
        retry_max_seconds=2,
        storage_max_retries=0,
        storage_timeout_seconds=5,
    )
    s = base.model_copy(update={"s3": base.s3.model_copy(update={"endpoint_url": proxy.endpoint})})
    try:
        with lake_topics(s):
            yield S3Lake(s, prefix, proxy)
    finally:
        proxy.stop()
        delete_prefix(kafka, bucket, prefix)


def _direct(settings: Settings, real_endpoint: str) -> Settings:
    """The same lake read straight from MinIO (not through the proxy)."""
    return settings.model_copy(update={"s3": settings.s3.model_copy(update={"endpoint_url": real_endpoint})})


def test_once_archives_everything_exactly_once(local_lake: Settings) -> None:
    w = workload()
    produce_workload(local_lake, w)
    done = _archive(local_lake)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(local_lake, w)
    # a second run finds nothing new and writes nothing
    again = _archive(local_lake)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "archived 0 records" in again.stdout
    assert_exactly_once(local_lake, w)
    # the new optional field became a column
    dt = Lake(local_lake).open(SILVER_INTERACTIONS)
    assert dt is not None and "experiment_arm" in dt.schema().to_arrow().names


@pytest.mark.parametrize(
    "crash",
    [
        "before_write:bronze_interactions@2",  # nothing of batch 2 written
        "after_commit:bronze_interactions@2",  # bronze has batch 2, silver etc. do not
        "after_commit:dead_letters@3",  # every table committed, Kafka group offsets not
        "before_offset_commit@1",  # same, first batch
    ],
)
def test_sigkill_at_crash_point_then_restart(local_lake: Settings, crash: str) -> None:
    w = workload(seed=hash(crash) % 1000)
    produce_workload(local_lake, w)
    killed = _archive(local_lake, crash=crash)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    assert f"crash point {crash.split('@')[0]}" in killed.stderr
    done = _archive(local_lake)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(local_lake, w)


@pytest.mark.slow
def test_sigkill_between_data_files_and_commit_on_s3(s3_lake: S3Lake, s3: Settings) -> None:
    """The proxy kills the archiver when it is about to PUT silver's commit of batch 2: that batch's
    Parquet files are in the bucket, the commit is not. Restart: every record exactly once, and the
    orphaned files are invisible until VACUUM deletes them."""
    settings, prefix, proxy = s3_lake
    w = workload(n=240, seed=11)
    produce_workload(settings, w)
    victim: dict[str, subprocess.Popen[str]] = {}

    def kill_on_silver_commit(method: str, path: str) -> bool:
        # version 0 = table creation, 1 = batch 1, 2 = batch 2: die while committing batch 2
        if not path.endswith("/silver_interactions/_delta_log/00000000000000000002.json"):
            return False
        victim["p"].send_signal(signal.SIGKILL)
        victim["p"].wait(30)
        return True  # drop the request: the commit never reaches MinIO

    proxy.on_commit = kill_on_silver_commit
    env = {**os.environ, **env_for(settings)}
    env.pop("LAMBDAREC_LAKE_CRASH_POINT", None)
    victim["p"] = subprocess.Popen(
        [LAMBDAREC, "lake", "archive", "--once"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = victim["p"].communicate(timeout=180)
    assert victim["p"].returncode == -signal.SIGKILL, err[-3000:]
    proxy.on_commit = None

    direct = _direct(settings, s3.s3.endpoint_url)
    dt = Lake(direct).open(SILVER_INTERACTIONS)
    assert dt is not None and dt.version() == 1  # batch 2's commit was dropped
    referenced = {u.rsplit("/", 1)[-1] for u in dt.file_uris()}
    in_bucket = [
        k
        for k in list_keys(s3, s3.s3.archive_bucket, f"{prefix}/silver_interactions/")
        if k.endswith(".parquet")
    ]
    orphans = [k for k in in_bucket if k.rsplit("/", 1)[-1] not in referenced]
    assert orphans, "batch 2's data files should have been uploaded before its commit"

    done = _archive(settings)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exactly_once(direct, w)

    # VACUUM (full: lists the directory) removes the orphans of the crashed write
    removed = vacuum(direct, ARCHIVE_TABLES, retention_hours=0, enforce_retention=False)
    gone = {f.rsplit("/", 1)[-1] for f in removed[SILVER_INTERACTIONS.name]}
    assert {k.rsplit("/", 1)[-1] for k in orphans} <= gone
    assert_exactly_once(direct, w)


@pytest.mark.slow
def test_s3_outage_pauses_and_resumes_without_loss(s3_lake: S3Lake, s3: Settings, tmp_path: Path) -> None:
    """The object store goes away mid-stream (the proxy stops: connections refused) and comes
    back; the running archiver retries with backoff and ends with every record exactly once."""
    settings, _prefix, proxy = s3_lake
    direct = _direct(settings, s3.s3.endpoint_url)
    first, second = workload(n=120, seed=21), workload(n=120, seed=22)
    env = {**os.environ, **env_for(settings)}
    env.pop("LAMBDAREC_LAKE_CRASH_POINT", None)
    log = tmp_path / "archiver.log"
    with log.open("w") as logf:
        p = subprocess.Popen(
            [LAMBDAREC, "lake", "archive"], env=env, stdout=logf, stderr=subprocess.STDOUT, text=True
        )
        try:
            produce_workload(settings, first)
            _wait_for_rows(direct, len(first.event_ids))
            proxy.stop()
            produce_workload(settings, second)
            deadline = time.monotonic() + 90
            while "retrying" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                assert p.poll() is None, log.read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(4)  # a few failed attempts with backoff
            assert p.poll() is None, "the archiver must wait for the store, not exit"
            proxy.start()
            _wait_for_rows(direct, len(first.event_ids | second.event_ids))
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(60)
    text = log.read_text()
    assert p.returncode == 0, text[-3000:]
    assert "commit failed" in text or "failed (" in text
    merged = combine(first, second)
    assert_exactly_once(direct, merged)


def _wait_for_rows(settings: Settings, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        dt = Lake(settings).open(SILVER_INTERACTIONS)
        got = 0 if dt is None else dt.to_pyarrow_dataset().count_rows()
        if got >= n:
            return
        time.sleep(1)
    raise AssertionError(f"silver has {got} rows after {timeout}s, expected {n}")
