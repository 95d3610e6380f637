"""API errors and their two envelopes: OpenAI's for /v1 and the Extended API's for /api/v1."""
from __future__ import annotations

from dataclasses import dataclass

OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error",
                405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
                429: "rate_limit_error"}


@dataclass
class ApiError(Exception):
    status: int
    message: str
    param: str | None = None
    code: str | None = None
    retry_after: int | None = None
    error_type: str | None = None       # OpenAI's `type` when the status alone does not say it

    def __str__(self) -> str:
        return self.message

    def openai_body(self) -> dict:
        kind = self.error_type or OPENAI_TYPES.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind,
                          "param": self.param, "code": self.code or default_code(self.status)}}

    def extended_body(self) -> dict:
        return {"success": False, "error": short_reason(self.status), "detail": self.message,
                "error_code": (self.code or default_code(self.status)).upper()}


def default_code(status: int) -> str:
    return {400: "invalid_value", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
            413: "payload_too_large", 415: "unsupported_media_type", 429: "rate_limited", 499: "cancelled",
            503: "model_unavailable", 504: "timeout"}.get(status, "internal_error")


def short_reason(status: int) -> str:
    return {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
            429: "Too many requests",
            413: "Payload too large", 415: "Unsupported media type", 503: "Service unavailable", 504: "Timed out",
            507: "Insufficient storage"}.get(
        status, "Internal server error")
