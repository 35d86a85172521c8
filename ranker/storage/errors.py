"""Why a model could not be fetched: one exception class per reason.

Each class name is the reason the control plane puts on a condition (CamelCase, one
word), so ``ranker fetch-model`` prints it as is. ``retryable`` says whether trying
again later (the operator's retry, not the fetch's own) can help: a server that is
down may come back, a digest that does not match will not.

Messages name the location (credentials and query strings removed, see
:func:`ranker.storage.uri.redact`) and what went wrong; they never hold a credential.
"""

from __future__ import annotations

from typing import ClassVar


class ModelFetchError(Exception):
    """A model could not be fetched; ``str(exc)`` is the reason for a person."""

    retryable: ClassVar[bool] = False

    @property
    def reason(self) -> str:
        """The condition reason: the class name (``ModelNotFound``, ...)."""
        return type(self).__name__


class UnsupportedModelURI(ModelFetchError):
    """The URI's scheme is not one this ranker fetches, or the URI is malformed."""


class ModelNotFound(ModelFetchError):
    """The bucket, prefix, object or file does not exist (S3 404, HTTP 404, no objects)."""


class ModelAccessDenied(ModelFetchError):
    """The server refused the credentials (S3 403, HTTP 401/403), or there were none."""


class ModelCredentialsInvalid(ModelFetchError):
    """The credentials directory or environment is unusable (e.g. HTTPS_HEADERS not JSON)."""


class ModelDigestMismatch(ModelFetchError):
    """The fetched model's digest is not the one asked for."""


class ModelTooLarge(ModelFetchError):
    """The model is larger than the byte limit (or the free space of the target's disk)."""


class InvalidModelContent(ModelFetchError):
    """An archive or listing that is corrupt or would write outside the model directory:
    an absolute path, a ``..`` component, a link leading out, a device, a duplicate."""


class ModelTLSError(ModelFetchError):
    """The server's TLS certificate does not verify against the trusted CAs (give the
    server's CA as ``ca.crt`` in the credentials directory)."""


class ModelRegistryUnavailable(ModelFetchError):
    """The server could not be reached, or kept failing (5xx, throttling), after the retries."""

    retryable = True


class ModelFetchTimeout(ModelRegistryUnavailable):
    """The server accepted the connection but did not answer (or stalled mid-transfer)
    within the timeout, on every try; a kind of ModelRegistryUnavailable."""
