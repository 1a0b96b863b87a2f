"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status.

Clients (the ``openai`` library among them) read these fields: the message says what is wrong in one
line, ``param`` names the request field. Every refusal the server makes goes through `ApiError`; an
unexpected failure is logged and answered 500 with a message, never with a traceback.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # OpenAI's type for a wrong key and an unknown model; `code` tells them apart
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """A refusal: status, message, and the field it is about (``param``)."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, headers: Any = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        kind = TYPES.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_validation(err: ValidationError) -> ApiError:
    """The first problem of a request body, naming its field (``messages.0.role``) and what was given."""
    errors = err.errors()
    first = errors[0]
    field = _field(first)
    # a union reports one error per member (`stop` as text, `stop` as a list, a content part of no known
    # type): the one that says more than "not of this type", at the field or inside it, is the member
    # the value was meant for
    inside = [e for e in errors if _field(e)[: len(field)] == field]
    first = next((e for e in inside if not e["type"].endswith("_type")), first)
    where = ".".join(_field(first))
    kind = first["type"]
    if kind == "extra_forbidden":
        return ApiError(400, f"Unrecognized request argument supplied: {where}", where, "unknown_parameter")
    if kind == "missing":
        return ApiError(400, f"{where}: a required field is missing", where, "missing_required_parameter")
    given = first.get("input")
    shown = repr(given) if not isinstance(given, dict | list) else type(given).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ApiError(400, f"{where}: {first['msg']} (got {shown})", where or None, "invalid_value")


def _field(error: Any) -> tuple[str, ...]:
    """An error's location as the request names it (``("messages", "0", "role")``), union members left out."""
    return tuple(str(part) for part in error["loc"] if not _is_type_tag(part))


def _is_type_tag(part: object) -> bool:
    """pydantic's union members in a location (``str``, ``list[int]``): not part of the field's name."""
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool", "function-after"})
