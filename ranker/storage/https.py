"""https://: one file, or an archive (tar, tar.gz/tgz, zip) unpacked into the model directory.

The URL's last path segment decides: a name ending in ``.tar``, ``.tar.gz``, ``.tgz`` or
``.zip`` is unpacked (:mod:`ranker.storage.archive`), anything else is saved under that
name. Headers from ``HTTPS_HEADERS`` (a bearer token, an API key) go with every request
to the URL's host and are dropped if a redirect leads to another host; the CA bundle
and timeouts are the transport's (:mod:`ranker.storage.transport`).

A single file or a zip resumes a broken transfer with ``Range``; a tar is unpacked
while it streams, so a broken transfer starts the archive over (a fresh staging
directory) rather than keeping a copy of it on disk.
"""

from __future__ import annotations

from collections.abc import Callable

from ranker.storage.archive import unpack_tar, unpack_zip
from ranker.storage.digest import HashingWriter
from ranker.storage.retry import Transient
from ranker.storage.staging import ByteBudget, StagedFile, Staging
from ranker.storage.transport import BodyReader, Client, Response, Transfer, get_into
from ranker.storage.uri import HTTPSLocation


def _declared_size(budget: ByteBudget) -> Callable[[Response], None]:
    def check(resp: Response) -> None:
        length = resp.headers.get("Content-Length")
        if length and length.isdigit():
            budget.check_declared(int(length))

    return check


def fetch_https(loc: HTTPSLocation, staging: Staging, transfer: Transfer) -> None:
    with transfer.client(loc.describe()) as client:
        headers = dict(transfer.config.headers)
        kind = loc.archive
        if kind is None:
            with staging.open(loc.name) as out:
                get_into(
                    client, loc.url, out, transfer.policy, headers=headers,
                    follow_redirects=True, on_response=_declared_size(staging.budget),
                )  # fmt: skip
        elif kind == "zip":
            _fetch_zip(client, loc, staging, transfer, headers)
        else:
            _fetch_tar(client, loc, staging, transfer, headers)


def _fetch_zip(
    client: Client,
    loc: HTTPSLocation,
    staging: Staging,
    transfer: Transfer,
    headers: dict[str, str],
) -> None:
    # the archive itself may not exceed the limit either; it lives next to the staging
    # directory (same filesystem) and goes once unpacked
    budget = ByteBudget(staging.budget.limit, staging.what)
    scratch = staging.scratch
    try:
        with scratch.open("w+b") as f:
            out = StagedFile(HashingWriter(f, loc.name), budget)
            get_into(
                client, loc.url, out, transfer.policy, headers=headers,
                follow_redirects=True, on_response=_declared_size(budget),
            )  # fmt: skip
            f.flush()
            f.seek(0)
            unpack_zip(f, staging)
    finally:
        scratch.unlink(missing_ok=True)


def _fetch_tar(
    client: Client,
    loc: HTTPSLocation,
    staging: Staging,
    transfer: Transfer,
    headers: dict[str, str],
) -> None:
    def attempt() -> None:
        staging.reset()
        resp = client.open(
            "GET", loc.url, {"Accept-Encoding": "identity", **headers}, follow_redirects=True
        )
        try:
            if resp.status != 200:
                raise client.status_error(resp)
            # a broken transfer (Transient from the reader) starts the archive over: the
            # count of tries is not reset by progress, so a server that always breaks
            # halfway ends as ModelRegistryUnavailable
            unpack_tar(BodyReader(resp, client.timeout), staging)  # type: ignore[arg-type]
        except Transient as exc:
            raise Transient(exc.reason, timeout=exc.timeout, retry_after=exc.retry_after) from None
        finally:
            resp.release_conn()

    transfer.policy.run(attempt, loc.describe())
