"""What the ranker, the router and the control plane agree on.

Owns: the HTTP request and response schemas (:mod:`.schemas`), the two user hashes
(routing and analysis buckets, :mod:`.hashing`), request limits and the HTTP guard
(:mod:`.limits`, :mod:`.http_guard`) and ASGI types (:mod:`.asgi`). Imports nothing
else of ranker.
"""
