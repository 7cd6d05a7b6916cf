"""The service's one exception hierarchy, mapped to HTTP in one place (``service.app``).

::

    ServiceError                      500  the service's own fault, unexpected
    ├── ClientError                   4xx  the request is wrong; the body says how
    │   ├── MalformedRequest          400  unparseable body, bad parameter, bad UID
    │   ├── NotFound                  404  no such study / series / instance
    │   ├── NotAcceptable             406  nothing we can produce satisfies Accept
    │   ├── PayloadTooLarge           413  over the configured request size
    │   ├── RangeNotSatisfiable       416  a byte range outside the value
    │   └── UnsupportedMediaType      415  a Content-Type we do not take
    ├── BackendUnavailable            503  storage or index cannot be reached
    └── InstanceRejected              (never reaches HTTP) one STOW part failed;
                                       carries a PS3.18 failure reason code and is
                                       turned into a FailedSOPSequence item

Per-instance STOW outcomes are data (``service.core.stow.InstanceOutcome``);
``InstanceRejected`` only travels from the place that detects the problem to the loop
that records the outcome.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ClientError",
    "InstanceRejected",
    "MalformedRequest",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "ServiceError",
    "UnsupportedMediaType",
]


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    status_code: int = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Extra response headers (Content-Range of a 416, say).
        self.headers = headers or {}


class ClientError(ServiceError):
    """The request is at fault; retrying it unchanged will fail again."""

    status_code = 400


class MalformedRequest(ClientError):
    status_code = 400


class NotFound(ClientError):
    status_code = 404

    @classmethod
    def unstored(cls, study: str, series: str | None = None, sop: str | None = None) -> NotFound:
        """The study, series or instance a request names is not stored."""
        if sop is not None:
            what = f"instance {sop} of series {series} in study {study}"
        elif series is not None:
            what = f"series {series} in study {study}"
        else:
            what = f"study {study}"
        return cls(f"{what} is not stored here")


class NotAcceptable(ClientError):
    status_code = 406


class PayloadTooLarge(ClientError):
    status_code = 413


class RangeNotSatisfiable(ClientError):
    status_code = 416


class UnsupportedMediaType(ClientError):
    status_code = 415


class BackendUnavailable(ServiceError):
    """Storage or index is unreachable or refuses us; the request may succeed later."""

    status_code = 503


class InstanceRejected(ServiceError):
    """One instance of a STOW request cannot be stored.

    ``reason`` is a PS3.18 / PS3.4 failure reason code (see ``service.dicom.reasons``).
    """

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
