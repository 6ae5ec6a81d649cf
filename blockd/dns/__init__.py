"""The resolver: answers subscribers' DNS queries, blocked names with a notice or an error.

Sans-I/O parts, unit-tested without sockets: ``wire`` (scanning queries and walking
answers as bytes), ``admission`` (client ACL, rate limit), ``answers`` (prebuilt blocked
answers), ``cache`` (upstream answers kept as bytes) and ``service`` (one message in, bytes
or an awaitable out). The I/O: ``upstream`` (forwarding over UDP/TCP) and ``server`` (the
listening transports). Nothing here imports the store: hits go to a ``core.ports.HitSink``.
"""
