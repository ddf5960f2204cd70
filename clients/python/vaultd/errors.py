"""Typed exceptions for vaultd's answers: the gRPC code and the ``vault-error`` reason
(PROTOCOL.md, section 6) decide the class."""

import grpc


class VaultError(Exception):
    """Any refusal or failure from vaultd, or of this client."""

    def __init__(self, message, code=None, reason=None):
        super().__init__(message)
        self.code = code
        self.reason = reason


class Unavailable(VaultError):
    """vaultd could not answer now (unreachable, or a reason below); another node may."""


class Sealed(Unavailable):
    """vaultd is sealed: custodians must unseal it."""


class OutOfStep(Unavailable):
    """The node is behind the other nodes sharing its database."""


class AuditUnavailable(Unavailable):
    """The audit log cannot be written, so vaultd answers nothing."""


class Uninitialised(VaultError):
    """vaultd has not been initialised."""


class UnknownSession(VaultError):
    """The lease session is unknown or expired (the client opens a new one)."""


class PermissionDenied(VaultError):
    """A policy refused the request."""


class NotFound(VaultError):
    """No such secret, lease or key."""


class InvalidArgument(VaultError):
    """The request was malformed, or a sealed payload did not open."""


class Unauthenticated(VaultError):
    """The connection's certificate names no identity vaultd accepts."""


class ResourceExhausted(VaultError):
    """A bound was reached (leases, sessions, watches)."""


class ApiKeyRefused(VaultError):
    """An API key was refused; the subclass says why."""


class ApiKeyInvalid(ApiKeyRefused):
    """The key is malformed, unknown or wrong."""


class ApiKeyRevoked(ApiKeyRefused):
    """The key was revoked."""


class ApiKeyExpired(ApiKeyRefused):
    """The key expired, or its rotation grace window ended."""


class ApiKeyEnvironment(ApiKeyRefused):
    """The key belongs to the other environment."""


class ApiKeyScope(ApiKeyRefused):
    """The key lacks the scope asked for."""


class Limited(ResourceExhausted):
    """A rate limit or daily quota refused: ``retry_after`` seconds, which ``scope``
    (``api_key``, ``tenant``, ``identity``) and ``window`` (``burst``, ``minute``,
    ``day``, ``quota``)."""

    def __init__(self, message, code=None, reason=None, retry_after=None, scope=None, window=None):
        super().__init__(message, code, reason)
        self.retry_after = retry_after
        self.scope = scope
        self.window = window


class RateLimited(Limited):
    """A rate limit was reached."""


class QuotaExceeded(Limited):
    """The API key's daily quota is spent."""


BY_REASON = {
    "unknown-session": UnknownSession,
    "sealed": Sealed,
    "out-of-step": OutOfStep,
    "uninitialised": Uninitialised,
    "audit": AuditUnavailable,
    "api-key-invalid": ApiKeyInvalid,
    "api-key-revoked": ApiKeyRevoked,
    "api-key-expired": ApiKeyExpired,
    "api-key-environment": ApiKeyEnvironment,
    "api-key-scope": ApiKeyScope,
    "rate-limited": RateLimited,
    "quota-exceeded": QuotaExceeded,
}

BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def from_rpc_error(error: grpc.RpcError) -> VaultError:
    """The exception for a failed call."""
    code = error.code() if hasattr(error, "code") else None
    message = error.details() if hasattr(error, "details") else str(error)
    trailers = dict(error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else {}
    reason = trailers.get("vault-error")
    cls = BY_REASON.get(reason) or BY_CODE.get(code, VaultError)
    if issubclass(cls, Limited):
        retry = trailers.get("retry-after")
        return cls(
            message,
            code,
            reason,
            retry_after=int(retry) if retry and retry.isdigit() else None,
            scope=trailers.get("vault-limit-scope"),
            window=trailers.get("vault-limit-window"),
        )
    return cls(message, code, reason)
