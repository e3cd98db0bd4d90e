"""OpenAI-style errors: every failure the service returns has the body OpenAI clients expect.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`` with a 4xx/5xx status.
:func:`install_handlers` turns the service's own errors, FastAPI's request validation errors
and Starlette's HTTP errors into that body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.backends.request import describe_errors, error_location
from serving.logs import request_id_var
from serving.schemas import ErrorBody

#: The error responses each endpoint group declares in the OpenAPI document.
ERROR_STATUSES: dict[int, str] = {
    400: "The request is invalid (OpenAI's error body names the field)",
    401: "Missing or invalid API key",
    404: "Unknown model name, request id or endpoint",
    413: "The request body is larger than the limit",
    500: "Internal error",
    502: "The top tier failed",
    503: "At the concurrency limit (retry after a moment)",
    504: "No answer within the deadline",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these statuses, all with OpenAI's error body."""
    return {s: {"model": ErrorBody, "description": ERROR_STATUSES[s]} for s in statuses}


class APIError(Exception):
    """An error to return to the client as an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.code, self.param, self.headers = code, param, headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The HTTP response."""
        return JSONResponse(
            self.body(), status_code=self.status, headers={**self.headers, **(headers or {})}
        )


def error_code(exc: Exception) -> str:
    """The error code of a refused request: a target the router cannot certify has its own."""
    return str(getattr(exc, "api_code", "invalid_value"))


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 for a request the service cannot read."""
    return APIError(400, message, "invalid_request_error", code, param)


def unauthorized() -> APIError:
    """A 401 for a missing or wrong bearer key (says nothing about which keys exist)."""
    return APIError(
        401,
        "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
        "authentication_error",
        "invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def internal_error() -> APIError:
    return APIError(500, "Internal error; see the service log.", "server_error", "internal_error")


def validation_error(exc: RequestValidationError) -> APIError:
    """A 400 naming the first field FastAPI's validation of a body refused."""
    errors: list[dict[str, Any]] = [dict(e) for e in exc.errors()]
    first = errors[0] if errors else {"loc": (), "type": "", "msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    inner = loc[1:] if loc[:1] == ("body",) else loc
    kind = str(first.get("type", ""))
    if kind in ("json_invalid", "json_type") or (
        not inner and kind in ("model_attributes_type", "dict_type", "model_type")
    ):
        ctx = first.get("ctx")
        detail = ctx.get("error") if isinstance(ctx, dict) else None
        reason = f": {detail}" if detail else ""
        return bad_request(f"the request body is not a JSON object{reason}", None, "invalid_json")
    param = error_location(inner) or None
    if kind == "missing" and len(inner) == 1:
        return bad_request(f"{param}: field required", param, "missing_field")
    if param == "messages" and kind == "too_short":
        return bad_request("messages must hold at least one message", param, "empty_messages")
    rebased = [{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in errors]
    return bad_request(describe_errors(rebased), param)


def install_handlers(app: FastAPI, count: Callable[[APIError], None]) -> None:
    """Answer every error with OpenAI's body (``count``: called for each one, e.g. metrics)."""

    def respond(exc: APIError) -> JSONResponse:
        count(exc)
        rid = request_id_var.get()
        return exc.response({"x-cascade-request-id": rid} if rid else None)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's only 400 of its own: a body it cannot decode (not UTF-8, not JSON)
        codes = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        message = (
            f"No endpoint {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        headers = dict(exc.headers) if exc.headers else None
        return respond(APIError(exc.status_code, message, kind, code, headers=headers))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(validation_error(exc))
