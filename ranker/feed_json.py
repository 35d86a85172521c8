"""The /rank answer as JSON bytes, from per-item fragments prepared at model load.

``json.dumps`` of fifty item dicts was the largest single cost of a request (profiled
at saturation). Everything about an item but its score is fixed for a model snapshot,
so each catalog row's ``{"item_id":…,"score":`` and ``,"category":…,"age_hours":…}``
are encoded once; a request joins them around each score's ``repr``, which is what
``json.dumps`` writes for a float. The bytes are identical to
``json.dumps(answer, ensure_ascii=False, separators=(",", ":"))`` (tested), the
encoding starlette's ``JSONResponse`` uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def _dump(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class FeedEncoder:
    def __init__(
        self,
        item_ids: npt.NDArray[np.int64],
        categories: Sequence[str],
        item_category: npt.NDArray[np.int64],
        item_age_hours: npt.NDArray[np.float64],
    ) -> None:
        names = [_dump(c) for c in categories]
        self._head = [b'{"item_id":' + _dump(int(i)) + b',"score":' for i in item_ids.tolist()]
        self._tail = [
            b',"category":' + names[c] + b',"age_hours":' + _dump(round(a, 2)) + b"}"
            for c, a in zip(item_category.tolist(), item_age_hours.tolist(), strict=True)
        ]

    def encode(
        self,
        *,
        user_id: int,
        rows: Sequence[int],
        scores: Sequence[float],
        latency_ms: float,
        model_version: str,
        variant: str,
        fallback: bool,
    ) -> bytes:
        head, tail = self._head, self._tail
        items = b",".join(
            head[r] + float.__repr__(s).encode() + tail[r]
            for r, s in zip(rows, scores, strict=True)
        )
        return b"".join((
            b'{"user_id":', str(user_id).encode(), b',"items":[', items,
            b'],"latency_ms":', float.__repr__(latency_ms).encode(),
            b',"model_version":', _dump(model_version), b',"variant":', _dump(variant),
            b',"fallback":', b"true" if fallback else b"false", b"}",
        ))  # fmt: skip
