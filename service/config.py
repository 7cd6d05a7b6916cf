"""Typed configuration, read once from ``DICOMWEB_*`` environment variables.

Every setting is a field of :class:`Settings` with its type, default and description in
one place; ``python -m service config`` prints them as a table. A ``DICOMWEB_*`` variable
that names no setting is an error at start-up, so a typo fails loudly instead of being
silently ignored. Command-line flags (``serve --host --port --data-dir``) override the
environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

__all__ = ["ENV_PREFIX", "ConfigError", "Settings", "describe", "load_settings"]

ENV_PREFIX = "DICOMWEB_"


class ConfigError(Exception):
    """The environment or the flags do not form a valid configuration."""


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The service's settings. Field ``x`` is read from ``DICOMWEB_X``."""

    host: Annotated[str, _doc("Address the HTTP server listens on.")] = "127.0.0.1"
    port: Annotated[int, _doc("TCP port the HTTP server listens on."), msgspec.Meta(ge=0)] = 8080
    data_dir: Annotated[
        str, _doc("Directory for the embedded backends' files (blobs and SQLite index).")
    ] = "./data"
    storage: Annotated[
        str,
        _doc(
            "Blob storage URL: file:///abs/path, s3://bucket/prefix (prefix optional), "
            "or empty for <data_dir>/blobs."
        ),
    ] = ""
    index: Annotated[
        str,
        _doc(
            "Index URL: sqlite:///abs/path.sqlite, dynamodb://table, or empty for "
            "<data_dir>/index.sqlite."
        ),
    ] = ""
    workers: Annotated[
        int,
        _doc(
            "HTTP worker processes. Python runs one core per process: set it to the "
            "number of cores. Index writes of all workers take turns on a lock file."
        ),
        msgspec.Meta(ge=1, le=64),
    ] = 1
    malloc_arenas: Annotated[
        int,
        _doc(
            "glibc malloc arenas per serving process (M_ARENA_MAX): threads share them, "
            "so memory one frees is reused by the others; fewer is less peak memory. "
            "0 leaves glibc's default (8 per core)."
        ),
        msgspec.Meta(ge=0, le=1024),
    ] = 2
    root: Annotated[str, _doc("Path prefix of the DICOMweb API.")] = "/dicom-web"
    store: Annotated[
        str,
        _doc("Name of the store every key and index row is scoped by."),
        msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"),
    ] = "default"
    public_url: Annotated[
        str,
        _doc(
            "Base URL clients reach the service by (for RetrieveURL and BulkDataURI); "
            "empty: taken from each request."
        ),
    ] = ""
    max_request_bytes: Annotated[
        int, _doc("Largest STOW-RS request body accepted, in bytes."), msgspec.Meta(gt=0)
    ] = 4 * 1024**3
    local_sync: Annotated[
        Literal["auto", "fsync"],
        _doc(
            "How local-file storage makes a blob durable before acknowledging it: "
            "'auto' commits blobs in batches with one shared syncfs where that is "
            "trustworthy (Linux 5.8+, ext4/xfs/btrfs/f2fs/zfs/tmpfs), else fsyncs each "
            "file and folder; 'fsync' always fsyncs each file and folder."
        ),
    ] = "auto"
    header_memory_bytes: Annotated[
        int,
        _doc(
            "How much of a part's DICOM header is kept in memory before spilling to a "
            "temporary file (headers with large non-pixel bulk data)."
        ),
        msgspec.Meta(gt=0),
    ] = 4 * 1024**2
    duplicates: Annotated[
        Literal["reject", "replace"],
        _doc(
            "A re-upload of a stored SOP Instance UID with different bytes: 'reject' "
            "(keep the original, fail with 0xB00E) or 'replace'."
        ),
    ] = "reject"
    qido_default_limit: Annotated[
        int,
        _doc("QIDO-RS results per page when the request gives no limit."),
        msgspec.Meta(ge=1),
    ] = 100
    qido_max_limit: Annotated[
        int,
        _doc("Most QIDO-RS results one page may hold; larger limits are lowered to it."),
        msgspec.Meta(ge=1),
    ] = 1000
    log_level: Annotated[Literal["debug", "info", "warning", "error"], _doc("Logging level.")] = (
        "info"
    )

    # AWS backends (issue: S3 storage, DynamoDB index). Credentials come from the usual
    # AWS chain (environment, profile, instance role), never from DICOMWEB_* settings.
    aws_region: Annotated[str, _doc("AWS region for S3 and DynamoDB.")] = "us-east-1"
    s3_endpoint_url: Annotated[
        str, _doc("S3 endpoint for S3-compatible stores or tests; empty: AWS's own.")
    ] = ""
    dynamodb_endpoint_url: Annotated[
        str, _doc("DynamoDB endpoint for tests or local DynamoDB; empty: AWS's own.")
    ] = ""
    s3_part_size: Annotated[
        int,
        _doc("S3 multipart upload part size in bytes; smaller objects go in one PUT."),
        msgspec.Meta(ge=5 * 1024**2, le=5 * 1024**3),
    ] = 8 * 1024**2
    s3_upload_concurrency: Annotated[
        int, _doc("Parts of one S3 multipart upload sent at once."), msgspec.Meta(ge=1, le=64)
    ] = 4
    s3_sse: Annotated[
        Literal["AES256", "aws:kms", "none"],
        _doc("S3 server-side encryption: AES256 (SSE-S3), aws:kms (SSE-KMS) or none."),
    ] = "AES256"
    s3_kms_key_id: Annotated[str, _doc("KMS key id or ARN for s3_sse=aws:kms.")] = ""

    # Browser viewers and cached metadata (WADO-RS for viewers).
    cors_origins: Annotated[
        str,
        _doc(
            "Origins browsers may call the API from: a comma-separated list of origins "
            "(https://viewer.example.org), '*' for any, 'none' for no CORS, or empty for "
            "any origin on localhost / 127.0.0.1 / [::1] (a viewer in development)."
        ),
    ] = ""
    cors_allow_credentials: Annotated[
        bool, _doc("Let browsers send cookies / HTTP auth cross-origin (not with '*').")
    ] = False
    metadata_cache_bytes: Annotated[
        int,
        _doc(
            "Memory for compressed study and series metadata documents (0: none; "
            "they are still cached in storage)."
        ),
        msgspec.Meta(ge=0),
    ] = 64 * 1024**2
    metadata_warm_delay: Annotated[
        float,
        _doc(
            "Seconds a study must go without new instances before its metadata documents "
            "are rebuilt in the background, at the next pause in the worker's requests "
            "(0: only on request)."
        ),
        msgspec.Meta(ge=0),
    ] = 2.0

    # WADO-RS frames and transcoding (issue 4).
    transcode_max_bytes: Annotated[
        int,
        _doc(
            "Largest instance (stored or decoded size, in bytes) that WADO-RS transcodes or "
            "decodes frames of; larger ones answer 406 unless asked as stored."
        ),
        msgspec.Meta(gt=0),
    ] = 512 * 1024**2
    transcode_workers: Annotated[
        int, _doc("Instances transcoded at once (each in a worker thread)."), msgspec.Meta(ge=1)
    ] = 2

    # Rendered images and thumbnails (issue: WADO-RS for viewers).
    thumbnail_size: Annotated[
        int,
        _doc("Longest side of a thumbnail in pixels, when no viewport is asked for."),
        msgspec.Meta(ge=16, le=1024),
    ] = 128
    render_memory_bytes: Annotated[
        int,
        _doc(
            "Instances up to this size are read into memory to be rendered; larger ones "
            "are spooled to a temporary file first."
        ),
        msgspec.Meta(gt=0),
    ] = 32 * 1024**2

    # DIMSE sidecar (issue 6: `python -m service dimse`) and its durable job queue.
    dimse_ae_title: Annotated[
        str,
        _doc("AE title of the DIMSE sidecar."),
        msgspec.Meta(pattern=r"^[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]{0,15}$"),
    ] = "DICOMWEB"
    dimse_host: Annotated[str, _doc("Address the DIMSE sidecar listens on.")] = "127.0.0.1"
    dimse_port: Annotated[
        int, _doc("TCP port the DIMSE sidecar listens on."), msgspec.Meta(ge=0, le=65535)
    ] = 11112
    dimse_allowed_calling_aes: Annotated[
        str,
        _doc("Calling AE titles allowed to associate, comma-separated; empty: any."),
    ] = ""
    dimse_max_associations: Annotated[
        int, _doc("Most DIMSE associations served at once."), msgspec.Meta(ge=1)
    ] = 10
    dimse_acse_timeout: Annotated[
        float, _doc("Seconds to wait for association messages (ACSE)."), msgspec.Meta(gt=0)
    ] = 30.0
    dimse_timeout: Annotated[
        float, _doc("Seconds to wait for DIMSE messages."), msgspec.Meta(gt=0)
    ] = 30.0
    dimse_network_timeout: Annotated[
        float, _doc("Seconds an idle association is kept open."), msgspec.Meta(gt=0)
    ] = 60.0
    dimse_tls_cert: Annotated[str, _doc("PEM certificate for DIMSE over TLS; empty: no TLS.")] = ""
    dimse_tls_key: Annotated[str, _doc("PEM private key for dimse_tls_cert.")] = ""
    dimse_tls_ca: Annotated[
        str, _doc("PEM CA bundle: when set, peers must present a certificate it signed.")
    ] = ""
    dimse_forward: Annotated[
        str,
        _doc(
            "Forwarding and C-MOVE destinations, a JSON list of objects: ae_title, host, "
            "port, and optional modality and calling_ae lists and forward (false: a "
            "C-MOVE destination only); empty: none."
        ),
    ] = ""
    jobs: Annotated[
        str,
        _doc(
            "Job queue URL: sqlite:///abs/path.sqlite, dynamodb://table (shared by "
            "replicas), or empty for <data_dir>/jobs.sqlite."
        ),
    ] = ""
    job_retry_base: Annotated[
        float,
        _doc("Seconds before a failed job's first retry; doubles each time."),
        msgspec.Meta(gt=0),
    ] = 2.0
    job_retry_max: Annotated[
        float, _doc("Longest wait between retries of a job, in seconds."), msgspec.Meta(gt=0)
    ] = 300.0
    job_max_attempts: Annotated[
        int, _doc("Attempts before a job is dead-lettered."), msgspec.Meta(ge=1)
    ] = 10
    job_lease: Annotated[
        float,
        _doc("Seconds a worker holds a job; a job still claimed after that runs again."),
        msgspec.Meta(gt=0),
    ] = 300.0

    # DynamoDB index (issue 5): how far a search no index serves may read, and when an
    # instance's metadata moves from its item to the blob store.
    dynamodb_scan_limit: Annotated[
        int,
        _doc(
            "Most studies a DynamoDB search reads when no index serves it (or an index "
            "yields more candidates); beyond it the answer warns it may be incomplete."
        ),
        msgspec.Meta(ge=1),
    ] = 10_000
    dynamodb_inline_bytes: Annotated[
        int,
        _doc(
            "Largest compressed instance metadata kept in its DynamoDB item; larger "
            "documents go to blob storage with a pointer in the item."
        ),
        msgspec.Meta(ge=1024, le=256 * 1024),
    ] = 64 * 1024
    dynamodb_stale_claim_seconds: Annotated[
        int,
        _doc(
            "At start-up, claims older than this many seconds are taken as left by a "
            "crashed replica and cleared (their blobs deleted); longer than any upload."
        ),
        msgspec.Meta(ge=1),
    ] = 6 * 3600

    def __post_init__(self) -> None:
        # msgspec turns a ValueError here into a ValidationError naming the problem.
        origins = self.cors_origin_list
        if "*" in origins and self.cors_allow_credentials:
            raise ValueError("cors_allow_credentials cannot be used with cors_origins '*'")
        if [o.lower() for o in origins] == ["none"]:
            return
        bad = [o for o in origins if o != "*" and ("://" not in o or o.count("/") > 2)]
        if bad:
            raise ValueError(f"cors_origins: {', '.join(bad)} is not an origin (scheme://host)")

    @property
    def cors_origin_list(self) -> list[str]:
        """The allowed origins; empty means the localhost default, ``["none"]`` none."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def storage_url(self) -> str:
        return self.storage or (Path(self.data_dir).resolve() / "blobs").as_uri()

    @property
    def index_url(self) -> str:
        if self.index:
            return self.index
        return "sqlite:///" + str(Path(self.data_dir).resolve() / "index.sqlite").lstrip("/")

    @property
    def jobs_url(self) -> str:
        if self.jobs:
            return self.jobs
        return "sqlite:///" + str(Path(self.data_dir).resolve() / "jobs.sqlite").lstrip("/")

    @property
    def dicomweb_root(self) -> str:
        """The API prefix, normalised to a leading slash and no trailing slash."""
        return "/" + self.root.strip("/") if self.root.strip("/") else ""


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build :class:`Settings` from the environment (``DICOMWEB_*``) and explicit overrides.

    Raises :class:`ConfigError` naming every unknown variable or invalid value.
    """
    environ = os.environ if environ is None else environ
    fields = {f.name for f in msgspec.structs.fields(Settings)}
    raw: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in fields:
            raw[name] = value
        else:
            unknown.append(key)
    if unknown:
        known = ", ".join(ENV_PREFIX + f.upper() for f in sorted(fields))
        raise ConfigError(
            f"unknown environment variable(s) {', '.join(sorted(unknown))}; known: {known}"
        )
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, for docs and ``config``."""
    rows = []
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        description = ""
        field_type = field.type
        if isinstance(field_type, msgspec.inspect.Metadata):
            extra = field_type.extra_json_schema or {}
            description = str(extra.get("description", ""))
        rows.append((ENV_PREFIX + field.name.upper(), repr(field.default), description))
    return rows
