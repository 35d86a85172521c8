"""The /rank answer as JSON bytes, from per-item templates prepared at model load.

``json.dumps`` of fifty item dicts was the largest single cost of a request (profiled
at saturation). Everything about an item but its score is fixed for a model snapshot,
so each catalog row's ``{"item_id":…,"score":%r,"category":…,"age_hours":…}`` is
encoded once, as a ``%``-format template (any ``%`` in the fixed text doubled). A
request joins its rows' templates and formats all the scores in one ``%`` operation;
``%r`` of a float is its ``repr``, which is what ``json.dumps`` writes. The bytes are
identical to ``json.dumps(answer, ensure_ascii=False, separators=(",", ":"))``
(tested), the encoding starlette's ``JSONResponse`` uses.

What remains per request is mostly ``repr`` of the fifty scores (a float32 widened
to a double needs about 17 significant digits, which CPython's shortest-repr search
takes some 0.4 µs each to find).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from operator import itemgetter

import numpy as np
import numpy.typing as npt


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _literal(text: str) -> str:
    """``text`` as the fixed part of a ``%`` template."""
    return text.replace("%", "%%")


class FeedEncoder:
    def __init__(
        self,
        item_ids: npt.NDArray[np.int64],
        categories: Sequence[str],
        item_category: npt.NDArray[np.int64],
        item_age_hours: npt.NDArray[np.float64],
    ) -> None:
        names = [_literal(_dump(c)) for c in categories]
        self._templates = [
            '{"item_id":' + _dump(int(i)) + ',"score":%r,"category":' + names[c]
            + ',"age_hours":' + _dump(round(a, 2)) + "}"
            for i, c, a in zip(
                item_ids.tolist(), item_category.tolist(), item_age_hours.tolist(), strict=True
            )
        ]  # fmt: skip
        #: model_version and variant, JSON-encoded (the same few strings every request)
        self._strings: dict[str, str] = {}

    def _string(self, value: str) -> str:
        dumped = self._strings.get(value)
        if dumped is None:
            dumped = _dump(value)
            if len(self._strings) < 64:
                self._strings[value] = dumped
        return dumped

    def encode(
        self,
        *,
        user_id: int,
        rows: Sequence[int],
        scores: Sequence[float],  # Python floats (ndarray.tolist()), for %r
        latency_ms: float,
        model_version: str,
        variant: str,
        fallback: bool,
    ) -> bytes:
        if len(rows) != len(scores):
            raise ValueError(f"{len(rows)} rows but {len(scores)} scores")
        if len(rows) == 0:
            items = ""
        elif len(rows) == 1:
            items = self._templates[rows[0]] % (scores[0],)
        else:
            # itemgetter of several rows returns a tuple of their templates
            items = ",".join(itemgetter(*rows)(self._templates)) % tuple(scores)
        version, name = self._string(model_version), self._string(variant)
        return (
            f'{{"user_id":{user_id:d},"items":[{items}],"latency_ms":{latency_ms!r},'
            f'"model_version":{version},"variant":{name},'
            f'"fallback":{"true" if fallback else "false"}}}'
        ).encode()
