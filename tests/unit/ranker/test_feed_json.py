"""The precomputed /rank encoding writes exactly what json.dumps of the answer would."""

from __future__ import annotations

import json

import numpy as np

from ranker.serve.feed_json import FeedEncoder
from ranker.world.ground_truth import CATEGORIES


def test_bytes_equal_json_dumps_of_the_answer() -> None:
    rng = np.random.default_rng(3)
    n = 500
    ids = rng.integers(0, 10**9, n)
    cats = rng.integers(0, len(CATEGORIES), n)
    ages = rng.random(n) * 500
    ages[:3] = [0.0, 1e-9, 12.345]
    encoder = FeedEncoder(ids, CATEGORIES, cats, ages)
    for trial in range(50):
        rows = rng.choice(n, 50, replace=False).tolist()
        scores = rng.random(50).astype(np.float32).tolist()
        if trial == 0:
            scores[:3] = [0.0, 1.0, 1e-30]
        answer = {
            "user_id": trial, "latency_ms": 0.1234, "model_version": "v2-ünï\"code",
            "variant": "treatment", "fallback": trial % 2 == 0,
            "items": [
                {"item_id": int(ids[r]), "score": s, "category": CATEGORIES[cats[r]],
                 "age_hours": round(float(ages[r]), 2)}
                for r, s in zip(rows, scores, strict=True)
            ],
        }  # fmt: skip
        expected = json.dumps(
            {k: answer[k] for k in ("user_id", "items", "latency_ms", "model_version",
                                    "variant", "fallback")},
            ensure_ascii=False, separators=(",", ":"),
        ).encode()  # fmt: skip
        got = encoder.encode(
            user_id=trial, rows=rows, scores=scores, latency_ms=0.1234,
            model_version=answer["model_version"], variant="treatment",
            fallback=answer["fallback"],
        )  # fmt: skip
        assert got == expected


def test_percent_signs_and_short_feeds() -> None:
    """The templates are %-formats: a % in a fixed part must come out as itself, and
    feeds of one item and of none are encoded like the rest."""
    categories = ["50%", "%r", "plain"]
    ids = np.array([7, 8, 9])
    encoder = FeedEncoder(ids, categories, np.array([0, 1, 2]), np.array([1.0, 2.5, 3.25]))
    for rows in ([], [1], [2, 0, 1]):
        scores = [0.1 * (r + 1) for r in rows]
        items = [
            {"item_id": int(ids[r]), "score": s, "category": categories[r],
             "age_hours": [1.0, 2.5, 3.25][r]}
            for r, s in zip(rows, scores, strict=True)
        ]  # fmt: skip
        expected = json.dumps(
            {"user_id": 5, "items": items, "latency_ms": 1.5, "model_version": "v%d",
             "variant": "%s", "fallback": True},
            ensure_ascii=False, separators=(",", ":"),
        ).encode()  # fmt: skip
        got = encoder.encode(
            user_id=5, rows=rows, scores=scores, latency_ms=1.5, model_version="v%d",
            variant="%s", fallback=True,
        )  # fmt: skip
        assert got == expected
