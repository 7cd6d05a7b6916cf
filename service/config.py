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
        _doc("Blob storage URL: file:///abs/path, or empty for <data_dir>/blobs."),
    ] = ""
    index: Annotated[
        str,
        _doc(
            "Index URL: sqlite:///abs/path.sqlite, dynamodb://table, or empty for "
            "<data_dir>/index.sqlite."
        ),
    ] = ""
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

    @property
    def storage_url(self) -> str:
        return self.storage or (Path(self.data_dir).resolve() / "blobs").as_uri()

    @property
    def index_url(self) -> str:
        if self.index:
            return self.index
        return "sqlite:///" + str(Path(self.data_dir).resolve() / "index.sqlite").lstrip("/")

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
