"""Models from where they live: a model URI fetched into a local directory, verified.

Owns ``ranker fetch-model`` (the init container that puts a variant's model in its
pod): parsing a model URI into a typed location (:mod:`.uri`); the credentials, endpoint
and CA bundle from a mounted Secret or the environment (:mod:`.credentials`); the
sources, one per scheme: ``file://`` (:mod:`.local`), ``https://`` (:mod:`.https`, one
file or an archive unpacked safely by :mod:`.archive`) and ``s3://`` (:mod:`.s3`, signed
by :mod:`.sigv4`) over one HTTP transport (:mod:`.transport`: TLS, timeouts, resumable
streaming) with retries (:mod:`.retry`); the staging directory next to the target
(:mod:`.staging`: safe paths, byte limit, per-file sha256); the digest of a model
directory (:mod:`.digest`); the fetch itself (:mod:`.fetch`: stage, verify, rename);
and why a fetch failed (:mod:`.errors`, one class per condition reason).

A new scheme (an MLflow registry's ``models:/``, ``oci://``) is a location class and a
parser in :mod:`.uri` and a source in :data:`.fetch.SOURCES`.

Imports nothing else of ranker (the model loader reads what this writes); outside
the standard library only urllib3. No credential ever reaches a message, a log line
or the output.
"""

from ranker.storage.errors import (
    InvalidModelContent,
    ModelAccessDenied,
    ModelCredentialsInvalid,
    ModelDigestMismatch,
    ModelFetchError,
    ModelFetchTimeout,
    ModelNotFound,
    ModelRegistryUnavailable,
    ModelTLSError,
    ModelTooLarge,
    UnsupportedModelURI,
)

__all__ = [
    "InvalidModelContent",
    "ModelAccessDenied",
    "ModelCredentialsInvalid",
    "ModelDigestMismatch",
    "ModelFetchError",
    "ModelFetchTimeout",
    "ModelNotFound",
    "ModelRegistryUnavailable",
    "ModelTLSError",
    "ModelTooLarge",
    "UnsupportedModelURI",
]
