"""The notice server: what a subscriber's browser gets from a blocked site.

``app.py`` decides and renders (``NoticeSite``: plain ``Request`` in, ``Page`` out, no
sockets); ``server.py`` moves bytes (a fast path for plain notices, aiohttp for the
rest); ``dnat.py`` reads where a redirected connection was going; ``i18n.py`` chooses
the language.
"""
