"""HTTP probes for the local processes (readiness polling)."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_status(url: str, timeout: float = 2.0) -> int:
    """The status of GET ``url``; 0 when nothing answers. Closes every response,
    error responses included (an unclosed one leaks its socket)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except OSError:
        return 0


def is_ready(base_url: str, path: str = "/ready") -> bool:
    return http_status(base_url + path) == 200
