"""The ``rankexp`` and ``kubectl rankexp`` commands.

Owns: the subcommands (:mod:`.commands`) and the text tables of ``rankexp status``
(:mod:`.status`). May import everything below it; ``page`` for ``rankexp dashboard``.
"""

from rankexp.cli.commands import kubectl_main, main

__all__ = ["kubectl_main", "main"]
