"""MinIO: the local S3-compatible object store (Delta lake archive, model artifacts).

Built once from source with ``go install github.com/minio/minio@<settings.s3.minio_version>``
through the Go module proxy (MinIO no longer ships maintained binaries, and its ``RELEASE.*`` tags
are not semver, so the pin is a Go pseudo-version or a tag the proxy resolves). The binary lands
in ``var/minio/bin/minio``; data lives in ``var/minio/data`` (single-node, single-drive).

With ``LAMBDAREC_S3__MANAGED=false`` nothing is built or started: the configured endpoint is only
probed with a real S3 call and the buckets are created if missing, so any S3-compatible store
(AWS S3, Ceph RGW, SeaweedFS, Garage, ...) works the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from infra.errors import InfraError
from infra.process import ServiceStatus, done_marker, ensure_port_free, require_tool, run_checked, spawn
from infra.s3 import s3_client
from infra.service import Service
from lambdarec.settings import Settings

MODULE = "github.com/minio/minio"
_PSEUDO = re.compile(r"^v\d+\.\d+\.\d+-(?:\S+\.)?(\d{14})-([0-9a-f]{12})$")
_RELEASE = re.compile(r"^RELEASE\.(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)$")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
#: MinIO answers every write with XMinioStorageFull (HTTP 507) once its drive is 99 % full
MINIO_FILL_LIMIT = 0.99
#: what a lambdarec run (lake, model snapshots, tests) may write on top
WRITE_MARGIN_BYTES = 2 << 30


def drive_space_problem(path: Path, margin: int = WRITE_MARGIN_BYTES) -> str:
    """Why MinIO on ``path``'s drive would refuse writes soon, or "" when there is room.

    MinIO checks the whole drive, not its own data, so a disk filled by anything else (Spark
    temp dirs, caches) fails every lake and model write with a 507 far from the cause.
    """
    usage = shutil.disk_usage(path)
    floor = usage.total * (1 - MINIO_FILL_LIMIT) + margin
    if usage.free >= floor:
        return ""
    gb = 1 << 30
    return (
        f"the drive of {path} has {usage.free / gb:.1f} GB free of {usage.total / gb:.0f} GB; MinIO "
        f"refuses every write once less than {1 - MINIO_FILL_LIMIT:.0%} is free, and a run needs about "
        f"{margin / gb:.0f} GB more: free at least {(floor - usage.free) / gb:.1f} GB (old /tmp/spark-* "
        "dirs, package caches, var/ data), or point LAMBDAREC_VAR_DIR at a roomier drive"
    )


def ldflags_for(version: str) -> str:
    """Linker flags that stamp the pinned version into the binary, as MinIO's own build does.

    ``go install`` alone leaves ``DEVELOPMENT.GOGET`` everywhere, which makes ``minio --version``
    useless for telling two builds apart.
    """
    flags = ["-s", "-w"]
    stamp: dict[str, str] = {}
    if m := _RELEASE.match(version):
        when = datetime.strptime(m.group(1), "%Y-%m-%dT%H-%M-%SZ")
        stamp = {"Version": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "ReleaseTag": version}
    elif m := _PSEUDO.match(version):
        when = datetime.strptime(m.group(1), "%Y%m%d%H%M%S")
        stamp = {
            "Version": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ReleaseTag": "DEVELOPMENT." + when.strftime("%Y-%m-%dT%H-%M-%SZ"),
            "CommitID": m.group(2),
            "ShortCommitID": m.group(2),
        }
    else:
        return " ".join(flags)
    stamp["CopyrightYear"] = str(when.year)
    flags += [f"-X {MODULE}/cmd.{k}={v}" for k, v in stamp.items()]
    return " ".join(flags)


class MinioService(Service):
    name = "minio"
    start_timeout = 60.0

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._last_error = ""
        self._version = ""

    # ---- paths / identity ---------------------------------------------------------------------
    @property
    def binary(self) -> Path:
        return self.home / "bin" / "minio"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def managed(self) -> bool:
        return self.settings.s3.managed

    @property
    def address(self) -> str:
        return self.settings.s3.endpoint_url

    # ---- install: go install from the module proxy --------------------------------------------
    def is_installed(self) -> bool:
        marker = done_marker(self.binary)
        return (
            self.binary.exists()
            and marker.exists()
            and marker.read_text().strip() == self.settings.s3.minio_version
        )

    def install(self) -> None:
        version = self.settings.s3.minio_version
        go = require_tool(
            "go",
            "MinIO is built from source: install Go >= 1.24 (https://go.dev/dl or `apt-get install "
            "golang`), or set LAMBDAREC_S3__MANAGED=false and point LAMBDAREC_S3__ENDPOINT_URL at "
            "an existing S3-compatible store",
        )
        partial = self.home / "bin.partial"  # GOBIN of an unfinished build; never trusted
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        env = {
            **os.environ,
            "GOBIN": str(partial),
            "GOTOOLCHAIN": "local",  # never try to download another Go toolchain
            "GOFLAGS": "-mod=mod",
            "CGO_ENABLED": "0",  # static binary, no C compiler needed (as MinIO's releases)
        }
        run_checked(
            [go, "install", "-trimpath", "-ldflags", ldflags_for(version), f"{MODULE}@{version}"],
            f"building MinIO {version} (LAMBDAREC_S3__MINIO_VERSION) with go install",
            env=env,
        )
        built = partial / "minio"
        if not built.exists():
            raise InfraError(f"go install finished but {built} is missing")
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, self.binary)
        shutil.rmtree(partial, ignore_errors=True)
        done_marker(self.binary).write_text(version + "\n")

    # ---- run ------------------------------------------------------------------------------------
    def _host(self) -> str:
        host = urlparse(self.settings.s3.endpoint_url).hostname or "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    def launch(self) -> int:
        s3 = self.settings.s3
        url = urlparse(s3.endpoint_url)
        if url.scheme != "http":
            raise InfraError(
                f"LAMBDAREC_S3__ENDPOINT_URL {s3.endpoint_url!r}: the local MinIO serves plain http; "
                "use http://127.0.0.1:PORT, or set LAMBDAREC_S3__MANAGED=false for an external https store"
            )
        if url.hostname not in _LOCAL_HOSTS:
            raise InfraError(
                f"LAMBDAREC_S3__ENDPOINT_URL {s3.endpoint_url!r} is not on this machine, so it cannot be "
                "a managed MinIO: use 127.0.0.1, or set LAMBDAREC_S3__MANAGED=false"
            )
        if len(s3.access_key) < 3 or len(s3.secret_key) < 8:
            raise InfraError(
                "MinIO needs LAMBDAREC_S3__ACCESS_KEY of at least 3 and LAMBDAREC_S3__SECRET_KEY of at "
                "least 8 characters"
            )
        ensure_port_free(s3.port, "LAMBDAREC_S3__ENDPOINT_URL")
        ensure_port_free(s3.console_port, "LAMBDAREC_S3__CONSOLE_PORT")
        if not self.binary.exists():
            raise InfraError(f"MinIO binary {self.binary} is missing: run `lambdarec infra up minio`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host = self._host()
        return spawn(
            [
                self.binary,
                "server",
                self.data_dir,
                "--address",
                f"{host}:{s3.port}",
                "--console-address",
                f"{host}:{s3.console_port}",
            ],
            self.log_file,
            env={
                "MINIO_ROOT_USER": s3.access_key,
                "MINIO_ROOT_PASSWORD": s3.secret_key,
                "MINIO_SITE_REGION": s3.region,
                "MINIO_UPDATE": "off",
            },
            cwd=self.home,
        )

    def ping(self) -> bool:
        """A real S3 request (ListBuckets) with the configured keys: works on any S3 store and
        also proves the credentials, which /minio/health/live would not."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            s3_client(self.settings, timeout=2.0, retries=0).list_buckets()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            self._last_error = (
                f"S3 answered {code}: check LAMBDAREC_S3__ACCESS_KEY / LAMBDAREC_S3__SECRET_KEY"
                if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}
                else f"S3 answered {code or exc}"
            )
            return False
        except (BotoCoreError, OSError) as exc:
            self._last_error = str(exc)
            return False
        self._last_error = ""
        return True

    def version(self) -> str:
        if self._version:
            return self._version
        if not self.managed:
            self._version = self._server_header()
            return self._version
        if not self.binary.exists():
            return ""
        try:
            out = subprocess.run(
                [str(self.binary), "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
        # "minio version DEVELOPMENT.2026-02-12T20-18-48Z (commit-id=7aac2a2c5b7c)" -> short form
        first = out.splitlines()[0] if out else ""
        m = re.match(r"minio version (\S+)(?: \(commit-id=(\w+)\))?", first)
        if not m:
            return first.strip()
        tag, commit = m.group(1), m.group(2) or ""
        self._version = f"{tag} ({commit[:7]})" if commit and commit != tag else tag
        return self._version

    def _server_header(self) -> str:
        """For an external store: its ``Server`` response header (e.g. MinIO, AmazonS3)."""
        try:
            resp = s3_client(self.settings, timeout=2.0, retries=0).list_buckets()
        except Exception:  # only a label for status
            return ""
        return str(resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server", ""))

    def bootstrap(self) -> None:
        """Create the archive and models buckets if missing, with plain S3 calls (any store)."""
        from botocore.exceptions import ClientError

        if self.managed and (problem := drive_space_problem(self.data_dir)):
            raise InfraError(f"MinIO: {problem}")
        s3 = self.settings.s3
        client = s3_client(self.settings, timeout=10.0)
        for bucket, setting in (
            (s3.archive_bucket, "LAMBDAREC_S3__ARCHIVE_BUCKET"),
            (s3.models_bucket, "LAMBDAREC_S3__MODELS_BUCKET"),
        ):
            try:
                client.head_bucket(Bucket=bucket)
                continue
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in {"404", "NoSuchBucket", "NotFound"}:
                    raise InfraError(f"bucket {bucket!r} ({setting}) is not usable: {code} {exc}") from exc
            kwargs: dict[str, object] = {"Bucket": bucket}
            if s3.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s3.region}
            try:
                client.create_bucket(**kwargs)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code != "BucketAlreadyOwnedByYou":
                    raise InfraError(f"cannot create bucket {bucket!r} ({setting}): {code} {exc}") from exc

    def status(self) -> ServiceStatus:
        st = super().status()
        if not st.healthy and self._last_error:
            reason = self._last_error[:200]
            st.detail = f"{st.detail}: {reason}" if self.managed else reason
        elif st.healthy and self.managed and (problem := drive_space_problem(self.data_dir)):
            st.healthy, st.detail = False, problem
        return st
