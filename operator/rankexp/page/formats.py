"""How the page spells values: status timestamps, percentages, numbers, counts, weights,
links and the tone (colour class) of a decision word. Pure functions, no markup."""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

#: variant colours (Tableau 10), in the order of spec.variants
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")  # fmt: skip
TONE = {
    "Promote": "good", "Promoted": "good", "Rollback": "bad", "RolledBack": "bad",
    "Failed": "bad", "Inconclusive": "warn", "Hold": "warn", "Continue": "neutral",
    "Running": "neutral", "Pending": "neutral",
}  # fmt: skip
#: what the page says wherever it shows a count Prometheus' increase() estimated
COUNTS_NOTE = (
    "counts from Prometheus increase(), rounded: increase() extrapolates to the edges of "
    "its window, so the raw figures are not whole numbers"
)


def finite(x: Any) -> float | None:
    """``x`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def epoch(text: Any) -> float | None:
    """Unix seconds of an API timestamp (``...Z``, ``+00:00``, fractions), else None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pct(x: Any, sign: bool = True) -> str:
    f = finite(x)
    if f is None:
        return "-"
    return f"{100.0 * f:+.2f}%" if sign else f"{100.0 * f:.1f}%"


def num(x: Any, digits: int = 3) -> str:
    f = finite(x)
    if f is None:
        return "-"
    if f.is_integer() and abs(f) >= 1:
        return str(int(f))
    return f"{f:.{digits}g}"


def count(x: Any) -> str:
    """A count as a whole number (half up): Prometheus' ``increase()`` extrapolates, so
    exposures, impressions and clicks come as ``350.746``; people read ``351``."""
    f = finite(x)
    return "-" if f is None else str(math.floor(f + 0.5))


def weights_text(weights: Iterable[Mapping[str, Any]] | None) -> str:
    """``control=50 treatment=50``."""
    parts = [f"{w.get('variant')}={num(w.get('weight'))}" for w in weights or []]
    return " ".join(parts) or "-"


def split_text(weights: Mapping[str, float]) -> str:
    """``control=50 treatment=50`` of a {variant: weight} mapping."""
    return " ".join(f"{k}={num(v)}" for k, v in weights.items())


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def experiment_href(namespace: str, name: str, metric: str | None = None) -> str:
    quote = urllib.parse.quote
    href = f"/experiments/{quote(namespace, safe='')}/{quote(name, safe='')}"
    return href + (f"?{urllib.parse.urlencode({'metric': metric})}" if metric else "")


def colours(names: Sequence[str]) -> list[str]:
    """One colour per name, in order (the palette repeats after ten)."""
    return [PALETTE[i % len(PALETTE)] for i in range(len(names))]


def tone(word: Any) -> str:
    return TONE.get(str(word), "neutral")
