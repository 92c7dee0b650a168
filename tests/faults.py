"""A TCP proxy to put between the app and PostgreSQL or Redis in a test, and break on
purpose: the shared servers keep running, only this test's path to them fails.

    with TcpProxy("127.0.0.1", 6379) as proxy:
        ...  # point the app at 127.0.0.1:proxy.port
        proxy.cut()  # every connection dropped, new ones closed at once
        proxy.freeze()  # connections accepted, nothing forwarded either way
        proxy.heal()  # forwarding again
"""

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:port to target_host:target_port on threads of its own."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self._flowing = threading.Event()  # cleared while frozen
        self._flowing.set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_forever, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Drop every open connection; new ones are accepted and closed at once (the
        client sees the server hang up, as when it dies)."""
        with self._lock:
            self._cut = True
            sockets, self._sockets = self._sockets, set()
        self._flowing.set()  # let held pumps run into their closed sockets and end
        for sock in sockets:
            _close(sock)

    def freeze(self) -> None:
        """Accept and hold connections, forward nothing: a server that stopped answering
        (SIGSTOP, a full network buffer, a black hole)."""
        with self._lock:
            self._cut = False
        self._flowing.clear()

    def heal(self) -> None:
        with self._lock:
            self._cut = False
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._thread.join(timeout=2)
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept_forever(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                cut = self._cut
            if cut:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._cut:
                    _close(client)
                    _close(upstream)
                    continue
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                self._flowing.wait()  # frozen: hold the bytes until healed or cut
                with self._lock:
                    if sink not in self._sockets:
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
