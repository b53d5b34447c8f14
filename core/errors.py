"""The one application error type. Services raise it; interfaces render it (CONTRACT §2)."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A failure the caller can act on: a stable snake_case ``code``, an HTTP ``status`` and details.

    ``extra`` members are added to the problem details body (e.g. ``record`` for a tombstone,
    ``errors`` for field errors); ``headers`` go on the response (e.g. ``Location``, ``Retry-After``).
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int = 400,
        title: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.title = title
        self.extra = extra or {}
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"ApplicationError({self.code!r}, {self.detail!r}, status={self.status})"


def not_found(detail: str = "No such object.", code: str = "not_found") -> ApplicationError:
    return ApplicationError(code, detail, status=404)


def validation_failed(errors: dict[str, list[str]], detail: str = "The request body is invalid.",
                      code: str = "invalid_request") -> ApplicationError:
    return ApplicationError(code, detail, status=400, extra={"errors": errors})
