"""AlertPolicy: rule evaluation against Prometheus, alert state, receivers, PrometheusRule.

Owns: one evaluation of a policy (:mod:`.evaluate`), pending/firing/resolved state as
Prometheus keeps it (:mod:`.state`), Slack, PagerDuty and webhook receivers
(:mod:`.receivers`) and the rendering for prometheus-operator (:mod:`.promrule`).
May import ``api``, ``prom`` and ``analysis``; never ``experiment``, ``runtime``,
``cli``, ``page`` or ``local``.
"""
