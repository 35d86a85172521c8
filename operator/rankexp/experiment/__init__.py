"""The Experiment: its children, its runs and ramps, its analysis loop, its status.

Owns: the desired children (:mod:`.resources`), where they live (:mod:`.store`: the
``ChildStore`` protocol and server-side apply), the traffic state machine
(:mod:`.rollout`), one reconcile (:mod:`.reconcile`), one analysis tick (:mod:`.loop`),
one read-and-analyse of the window (:mod:`.measure`) and the decision record as status
evidence (:mod:`.evidence`). Plain functions; the kopf handlers and timers that call them
are registered in :mod:`rankexp.runtime.handlers`. May import ``api``, ``prom``,
``analysis`` and ``ranker.route``; never ``alerting``, ``runtime``, ``cli``, ``page`` or
``local``.
"""
