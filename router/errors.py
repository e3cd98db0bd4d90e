"""Exceptions that the CLI and the service turn into clear messages and exit codes."""

from __future__ import annotations


class CascadeRouterError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 1


class DataValidationError(CascadeRouterError, ValueError):
    """Bad input data: names the file, the row and the column at fault."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file, self.row, self.column, self.detail = file, row, column, message
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigurationError(CascadeRouterError, ValueError):
    """An impossible setting or argument (unknown model, bad target, ...)."""

    exit_code = 2


class UnknownModelError(ConfigurationError):
    """A model name that selects no step and target of the cascade (``cascade[:STEP[:TARGET]]``)."""


class TargetNotCertifiableError(ConfigurationError):
    """A target the router cannot certify on its calibration outcomes at the risk asked.

    The message names the target, the outcomes and the risk, and the best certifiable
    alternative (``alternative``: a target string, or None when there is none but always
    calling the top tier).
    """

    #: the error code the service answers with (a 400)
    api_code = "target_not_certifiable"

    def __init__(
        self,
        message: str,
        *,
        target: str,
        delta: float,
        n: int,
        scope: str = "global",
        alternative: str | None = None,
    ) -> None:
        super().__init__(message)
        self.target, self.delta, self.n = target, delta, n
        self.scope, self.alternative = scope, alternative


class NotFittedError(CascadeRouterError, RuntimeError):
    """A learned object was used before `fit`."""


class BackendError(CascadeRouterError, RuntimeError):
    """A model backend failed to answer."""

    exit_code = 3


class BackendRequestError(BackendError):
    """A model backend refused the request as invalid (HTTP 400, 413 or 422)."""


class BackendUnavailableError(BackendError):
    """A model backend could not be reached (connection refused, DNS, timeout)."""


class BackendTimeoutError(BackendUnavailableError):
    """A model backend did not answer within its timeout."""


class RouterLoadError(CascadeRouterError, RuntimeError):
    """A saved router could not be found or read."""

    exit_code = 4


class UnknownRequestError(CascadeRouterError, KeyError):
    """Feedback names a request id that the feedback store never recorded."""

    exit_code = 2

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"unknown request id {request_id!r}: no such request was recorded")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])
