"""Reading the pre-DNAT destination: a connection that was not redirected has none."""

from __future__ import annotations

import socket

from blockd.web.dnat import original_destination


def test_no_socket_and_no_redirect_mean_none() -> None:
    assert original_destination(None) is None
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        with accepted:
            assert original_destination(accepted) is None
            assert original_destination(client) is None
