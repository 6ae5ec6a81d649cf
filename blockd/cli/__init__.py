"""The engineer's CLI. It parses, calls the core and the store, and prints; no logic here.

Every error is one line on stderr naming the field (``blockd: error: --issued: ...``) with
exit status 2, and every input is validated before the store is touched, so a refused
command leaves the database exactly as it was. ``blockd check`` exits 0 when the subject
is blocked and 1 when it is not, for scripts.
"""

from blockd.cli.root import cli, main  # the commands load when used (root.LAZY)

__all__ = ["cli", "main"]
