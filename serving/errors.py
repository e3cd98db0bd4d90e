"""OpenAI-style errors: every failure the service returns has the body OpenAI clients expect.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


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
