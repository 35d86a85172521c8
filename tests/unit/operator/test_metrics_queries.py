"""rankexp.prom.metrics: the PromQL builders and the pure conversions."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from rankexp.analysis import analyze, parse_input
from rankexp.prom.errors import BadSeries, MissingSeries
from rankexp.prom.metrics import _latency_by_bucket, analysis_input
from rankexp.prom.queries import (
    BUCKET_SERIES,
    build_queries,
    format_window,
    histogram_bins,
    selector,
)


def test_build_queries_exact_promql() -> None:
    q = build_queries("exp-a", "5m", namespace="team")
    sel = '{experiment="exp-a",namespace="team"}'
    assert q["impressions"] == (
        f"sum by (variant, bucket) (increase(ranking_impressions_total{sel}[5m]))"
    )
    assert q["clicks"] == f"sum by (variant, bucket) (increase(ranking_clicks_total{sel}[5m]))"
    assert q["score"] == f"sum by (variant, le) (increase(ranking_score_bucket{sel}[5m]))"
    assert q["features"] == (
        f"sum by (variant, feature, le) (increase(ranking_feature_value_bucket{sel}[5m]))"
    )
    assert q["latency_p95_seconds"] == (
        "histogram_quantile(0.95, sum by (variant, le) "
        f"(rate(ranking_latency_seconds_bucket{sel}[5m])))"
    )
    assert q["latency_buckets"] == (
        f"sum by (variant, bucket, le) (increase(ranking_bucket_latency_seconds_bucket{sel}[5m]))"
    )
    rank = '{experiment="exp-a",namespace="team",endpoint="rank"}'
    assert q["requests"] == f"sum by (variant) (increase(ranking_requests_total{rank}[5m]))"
    assert q["errors"] == f"sum by (variant) (increase(ranking_errors_total{rank}[5m]))"
    assert q["exposures"] == f"sum by (variant) (increase(router_exposures_total{sel}[5m]))"


def test_build_queries_covers_every_input() -> None:
    q = build_queries("e", timedelta(minutes=1))
    assert set(q) == {
        *BUCKET_SERIES,
        "score",
        "features",
        "latency_p95_seconds",
        "latency_buckets",
        "requests",
        "errors",
        "exposures",
    }
    for key, name in BUCKET_SERIES.items():
        assert f'increase({name}{{experiment="e"}}[60s])' in q[key]
    assert all("namespace" not in text for text in q.values())


def test_selector_escapes_label_values() -> None:
    assert selector('a"b\\c\nd') == '{experiment="a\\"b\\\\c\\nd"}'
    assert selector("x", None, endpoint="rank") == '{experiment="x",endpoint="rank"}'


@pytest.mark.parametrize(
    ("window", "text"),
    [
        ("5m", "5m"),
        ("1h30m", "1h30m"),
        ("250ms", "250ms"),
        (timedelta(minutes=5), "300s"),
        (timedelta(seconds=1.5), "1500ms"),
    ],
)
def test_format_window(window: str | timedelta, text: str) -> None:
    assert format_window(window) == text


@pytest.mark.parametrize("window", ["", "5", "5 m", "0s", "-1m", "5m]) or vector(1", "1.5m"])
def test_format_window_rejects(window: str) -> None:
    with pytest.raises(ValueError, match="window"):
        format_window(window)


def test_format_window_rejects_non_positive_timedelta() -> None:
    with pytest.raises(ValueError, match="positive"):
        format_window(timedelta(0))


def test_histogram_bins_folds_overflow_into_last_bin() -> None:
    cum = {0.25: 2.0, 0.5: 5.0, 1.0: 9.0, math.inf: 10.0}
    assert histogram_bins(cum) == {"edges": [0.0, 0.25, 0.5, 1.0], "counts": [2.0, 3.0, 5.0]}


def test_histogram_bins_first_bound_at_zero_gets_a_bin_below() -> None:
    cum = {0.0: 4.0, 0.01: 4.0, 0.02: 6.0, math.inf: 6.0}
    out = histogram_bins(cum)
    assert out["edges"] == [-0.01, 0.0, 0.01, 0.02]
    assert out["counts"] == [4.0, 0.0, 2.0]


def test_histogram_bins_clamps_extrapolation_noise() -> None:
    out = histogram_bins({1.0: 3.0000001, 2.0: 3.0, math.inf: 3.0})
    assert out["counts"] == [3.0000001, 0.0]


def _variant(clicks: float, impressions: float) -> dict[str, object]:
    return {
        "exposures": 2000.0,
        "requests": 2000.0,
        "errors": 0.0,
        "latency_p95_ms": 12.5,
        "buckets": {
            "clicks": [clicks] * 64,
            "impressions": [impressions] * 64,
            "engagements": [1.0] * 64,
            "dwell_seconds": [10.5] * 64,
            "dwell_events": [2.0] * 64,
        },
        "histograms": {
            "score": histogram_bins({0.5: 10.0, 1.0: 20.0, math.inf: 20.0}),
            "age": histogram_bins({0.0: 1.0, 10.0: 5.0, math.inf: 7.0}),
        },
    }


def test_analysis_input_assembles_a_valid_payload() -> None:
    payload = analysis_input(
        control="control",
        weights={"control": 50, "treatment": 50},
        variants={"control": _variant(3.0, 100.0), "treatment": _variant(3.3, 100.5)},
        method="fixed",
        guardrails=[
            {"metric": "latency_p95_ms", "max": 100},
            {"metric": "error_rate", "max": 0.01},
        ],
        drift={"psi": 0.3, "ksPValue": 0.01, "action": "alert"},
        min_samples_per_variant=100,
        experiment="exp-a",
    )
    assert payload["guardrails"] == {"latency_p95_ms": 100, "error_rate": 0.01}
    assert payload["drift"] == {"action": "block", "psi": 0.3, "ks_p_value": 0.01}
    assert "secondary_metrics" not in payload and "mde" not in payload
    model = parse_input(payload)
    assert model.method == "fixed" and model.min_samples_per_variant == 100
    record = analyze(payload)
    assert record["decision"] in {"Continue", "Promote", "Rollback", "Hold"}
    assert record["guardrails"][0]["value"] == 12.5


def test_analysis_input_drift_none_drops_histograms() -> None:
    variants = {"control": _variant(3.0, 100.0), "treatment": _variant(3.0, 100.0)}
    payload = analysis_input(
        control="control",
        weights={"control": 50, "treatment": 50},
        variants=variants,
        drift={"action": "none"},
    )
    assert all("histograms" not in v for v in payload["variants"].values())
    assert "drift" not in payload
    assert "histograms" in variants["control"]  # the caller's data is left alone


def test_analysis_input_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="weights"):
        analysis_input(
            control="control",
            weights={"control": 50, "treatment": 40},
            variants={"control": _variant(3.0, 100.0), "treatment": _variant(3.0, 100.0)},
        )


def test_missing_series_lists_every_pair() -> None:
    exc = MissingSeries("a_total", "x", missing=[("a_total", "x"), ("b_total", "y")])
    assert (exc.metric, exc.variant) == ("a_total", "x")
    assert str(exc) == "no data in the window: a_total for x, b_total for y"


def test_combined_queries_label_each_answer_with_its_key() -> None:
    from rankexp.prom.queries import QUERY_LABEL, combine

    text = combine({"a": "sum(x)", "b": 'count(y{z="1"})'})
    assert text == (
        f'label_replace(sum(x), "{QUERY_LABEL}", "a", "", "") or '
        f'label_replace(count(y{{z="1"}}), "{QUERY_LABEL}", "b", "", "")'
    )


def test_latency_by_bucket_gives_per_bin_rows_with_inf_last() -> None:
    def sample(v: str, b: int, le: str, value: float) -> tuple[dict[str, str], float]:
        return {"variant": v, "bucket": str(b), "le": le}, value

    samples = [
        sample("c", 0, "0.01", 2.0),
        sample("c", 0, "0.05", 5.0),
        sample("c", 0, "+Inf", 6.0),
        sample("c", 3, "0.01", 1.0),
        sample("c", 3, "0.05", 0.9),  # extrapolation noise: clamped
        sample("c", 3, "+Inf", 1.0),
    ]
    out = _latency_by_bucket(samples)
    assert list(out) == ["c"]
    assert out["c"]["le"] == [0.01, 0.05]
    rows = out["c"]["counts"]
    assert len(rows) == 64 and rows[0] == [2.0, 3.0, 1.0] and rows[3] == [1.0, 0.0, 0.0]
    assert rows[1] == [0.0, 0.0, 0.0]  # a bucket without samples is zeros
    with pytest.raises(BadSeries, match="bucket label"):
        _latency_by_bucket([sample("c", 64, "0.01", 1.0)])
    assert _latency_by_bucket([]) == {}  # absent (an older ranker): not an error here
