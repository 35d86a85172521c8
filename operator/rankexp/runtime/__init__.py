"""The operator process: kopf registration, leader election, telemetry, caches.

Owns: ``python -m rankexp`` (:mod:`.main`), the kopf handlers, timers and settings
(:mod:`.handlers`: registration only, the logic is in ``experiment`` and ``alerting``),
the Lease and its write fence (:mod:`.leader`), ``/metrics`` ``/healthz`` ``/leader``
(:mod:`.telemetry`), the children read from kopf indexes (:mod:`.childcache`) and the
Prometheus pod-discovery sidecar (:mod:`.podsd`). The top of the operator: nothing in
the product imports it but ``cli``.
"""
