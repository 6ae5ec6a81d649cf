"""The RPZ primary: the policy zone served to resolvers over AXFR/IXFR with NOTIFY.

``zone.py`` turns the index into records (shared with ``blockd export --format rpz``);
``primary.py`` answers queries and transfers and builds NOTIFY messages, sans-I/O; the
sockets are in ``daemon/rpz.py``.
"""
