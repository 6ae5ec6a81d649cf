"""The daemons: handles on one shared core per process.

``core.py`` (what every daemon stands on), ``dns.py``, ``http.py``, ``nft.py`` (the
handles), ``metrics.py``, ``process.py`` (signals, workers, uvloop), ``controller.py``
(the handles in-process), ``tasks.py`` (owned background tasks).
"""
