"""What can go wrong reading Prometheus: every error is a MetricsError, none of them a zero."""

from __future__ import annotations

from collections.abc import Sequence


class MetricsError(Exception):
    """Base class: the metrics could not be read; no decision should be taken."""


class PrometheusUnavailable(MetricsError):
    """No Prometheus API answered (connection refused, timeout, 5xx, 404)."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"Prometheus at {url} is unavailable: {cause}")
        self.url = url
        self.cause = cause


class QueryError(MetricsError):
    """Prometheus rejected a query (400 or 422, e.g. bad PromQL)."""

    def __init__(self, query: str, cause: str) -> None:
        super().__init__(f"query {query!r} failed: {cause}")
        self.query = query
        self.cause = cause


class MissingSeries(MetricsError):
    """``metric`` has no data for ``variant`` in the window.

    ``missing`` lists every (metric, variant) pair found missing in the same read.
    """

    def __init__(self, metric: str, variant: str, missing: Sequence[tuple[str, str]] = ()) -> None:
        self.metric = metric
        self.variant = variant
        self.missing = list(missing) or [(metric, variant)]
        pairs = ", ".join(f"{m} for {v}" for m, v in self.missing)
        super().__init__(f"no data in the window: {pairs}")


class BadSeries(MetricsError):
    """A series has an unexpected shape (bucket label out of range, histogram edges)."""

    def __init__(self, metric: str, variant: str, detail: str) -> None:
        super().__init__(f"{metric} for {variant}: {detail}")
        self.metric = metric
        self.variant = variant
        self.detail = detail
