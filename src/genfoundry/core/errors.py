"""Errors that know how to explain themselves.

Every error carries what the OpenAI error shape needs (message, type, param,
code) and the HTTP status the gateway answers with, so one handler can turn any
of them into ``{"error": {...}}``. Messages say what to do next.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BudgetExceeded",
    "CollectionNotFound",
    "ConfigError",
    "Conflict",
    "ContextLengthExceeded",
    "GenfoundryError",
    "InvalidRequest",
    "ModelNotFound",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProviderError",
    "RateLimited",
    "error_body",
]


def error_body(message: str, *, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """The one error shape every response and stream event uses (OpenAI's)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class GenfoundryError(Exception):
    """Base of every error genfoundry raises on purpose."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_dict(self) -> dict:
        return error_body(self.message, type_=self.error_type, param=self.param, code=self.code)


class ConfigError(GenfoundryError):
    status_code = 500
    error_type = "config_error"


class InvalidRequest(GenfoundryError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "payload_too_large"


class AuthenticationError(GenfoundryError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GenfoundryError):
    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class NotFound(GenfoundryError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class Conflict(GenfoundryError):
    """The thing changed since the caller last read it (another writer got there first)."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class ModelNotFound(NotFound):
    code = "model_not_found"


class CollectionNotFound(NotFound):
    code = "collection_not_found"


class RateLimited(GenfoundryError):
    """Too many requests for this key; ``retry_after`` is in seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Overloaded(RateLimited):
    """The model's queue is full; the client should retry later."""

    code = "model_overloaded"


class BudgetExceeded(RateLimited):
    code = "insufficient_quota"


class ProviderError(GenfoundryError):
    """The model provider failed (network, process died, upstream 5xx)."""

    status_code = 502
    error_type = "provider_error"
    code = "provider_error"
