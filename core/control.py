"""The control socket: msgpack-framed request/response on a Unix socket.

Frame: a 4-byte big-endian length, then a msgpack map.

* request  ``{"cmd": ["show", "firewall"], "format": "text" | "json"}``
* response ``{"ok": true, "data": <plain data>, "text": "<Junos-style text>"}``
  or ``{"ok": false, "error": "<message>"}``

Hostile input never takes the daemon down, nor the data plane's time: a frame over ``MAX_FRAME`` bytes,
a request of more than ``MAX_WORDS`` words or a word over ``MAX_WORD_LEN`` characters, garbage msgpack,
a wrong shape, a client that stalls or half-closes each gets an error reply or a close, and a counter.
A client has ``READ_TIMEOUT`` seconds for each request.  At most ``MAX_CLIENTS`` connections are served;
when all are taken, the one that has waited longest for its next request (an idle client) gives way to
the newcomer, so idle connections never lock the CLI out.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from typing import Any

import msgpack
import structlog
import trio

from .commands import CommandError
from .stats import Counters

log = structlog.get_logger("flowplane.control")

MAX_FRAME = 64 << 10  # requests; responses may be larger
MAX_WORDS = 64  # words in one request
MAX_WORD_LEN = 256  # characters in one word
MAX_RESPONSE = 64 << 20
READ_TIMEOUT = 10.0
MAX_CLIENTS = 32
_LEN = struct.Struct(">I")


class ControlServer:
    """Serves registered commands of an App on a Unix socket."""

    def __init__(self, app: Any, path: str, mode: int = 0o660) -> None:
        self.app = app
        self.path = path
        self.mode = mode
        self.counters = Counters("control")
        self._clients = 0
        self._waiting: dict[int, trio.CancelScope] = {}  # connections waiting for a request, oldest first

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        sock = await self._bind()
        try:
            task_status.started(self.path)
            log.info("control_socket_listening", path=self.path, mode=oct(self.mode))
            async with trio.open_nursery() as nursery:
                while True:
                    conn, _ = await sock.accept()
                    if self._clients >= MAX_CLIENTS and not self._evict_oldest_idle():
                        self.counters.drop("control", "too_many_clients")
                        conn.close()
                        continue
                    self._clients += 1
                    nursery.start_soon(self._serve_client, conn)
        finally:
            sock.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass

    async def _bind(self) -> trio.socket.SocketType:
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
            if not os.access(directory, os.W_OK):
                raise PermissionError(errno.EACCES, "not writable", directory)
        except PermissionError:
            fallback = fallback_path(self.path)
            log.warning("control_socket_fallback", wanted=self.path, path=fallback,
                        reason=f"{directory} is not writable by this user")
            self.path = fallback
            directory = os.path.dirname(fallback)
            os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            if not stat.S_ISSOCK(os.stat(self.path).st_mode):
                raise OSError(errno.EEXIST, f"control socket path {self.path} exists and is not a socket")
            if _in_use(self.path):
                raise OSError(errno.EADDRINUSE, f"control socket {self.path} is in use by another flowplane")
            os.unlink(self.path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # bind under a temporary name and rename once listening: a client never finds a socket
        # file that refuses connections
        tmp = f"{self.path}.{os.getpid()}.tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)
        old = os.umask(0o777 & ~self.mode)
        try:
            await sock.bind(tmp)
        finally:
            os.umask(old)
        os.chmod(tmp, self.mode)
        sock.listen(64)
        os.rename(tmp, self.path)
        return sock

    def _evict_oldest_idle(self) -> bool:
        """Close the connection that has waited longest for a request; False if every one is busy."""
        for key, scope in self._waiting.items():
            del self._waiting[key]
            scope.cancel()  # its task ends at once and gives its place back
            self.counters.drop("control", "idle_evicted")
            return True
        return False

    async def _serve_client(self, conn: trio.socket.SocketType) -> None:
        waiting: trio.CancelScope | None = None
        try:
            with conn:
                stream = trio.SocketStream(conn)
                self.counters.inc("connections")
                while True:
                    try:
                        with trio.CancelScope() as waiting:
                            self._waiting[id(waiting)] = waiting
                            with trio.fail_after(READ_TIMEOUT):
                                req = await _read_frame(stream, MAX_FRAME)
                        if self._waiting.pop(id(waiting), None) is None:  # evicted for a newer client
                            return
                    except trio.TooSlowError:
                        self.counters.drop("control", "timeout")
                        return
                    except _FrameError as exc:
                        self.counters.drop("control", exc.reason)
                        await self._reply(stream, {"ok": False, "error": str(exc)})
                        await _linger(conn)
                        return
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        return
                    if req is _EOF:
                        return
                    reply = self.handle(req)
                    if not await self._reply(stream, reply):
                        return
        finally:
            if waiting is not None:
                self._waiting.pop(id(waiting), None)
            self._clients -= 1

    async def _reply(self, stream: trio.SocketStream, reply: dict) -> bool:
        try:
            payload = msgpack.packb(reply, default=_default, use_bin_type=True)
        except Exception as exc:  # a command returned something msgpack cannot carry
            payload = msgpack.packb({"ok": False, "error": f"internal error encoding reply: {exc}"})
        try:
            with trio.fail_after(READ_TIMEOUT):
                await stream.send_all(_LEN.pack(len(payload)) + payload)
            return True
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.counters.drop("control", "reply_failed")
            return False

    def handle(self, req: Any) -> dict:
        """Run one request (already decoded) and build the reply; never raises."""
        if not isinstance(req, dict) or not isinstance(req.get("cmd"),
                                                       list) or not all(isinstance(w, str) for w in req["cmd"]):
            self.counters.drop("control", "bad_request")
            return {"ok": False, "error": "bad request: expected {'cmd': [words...], 'format': 'text'|'json'}"}
        if len(req["cmd"]) > MAX_WORDS or any(len(w) > MAX_WORD_LEN for w in req["cmd"]):
            self.counters.drop("control", "too_long")
            return {"ok": False, "error": f"request too long: at most {MAX_WORDS} words of at most "
                                          f"{MAX_WORD_LEN} characters"}
        words = [w for w in req["cmd"] if w]
        fmt = req.get("format", "text")
        self.counters.inc("requests")
        try:
            cmd, args = self.app.registries.commands.resolve(words)
            data = cmd.fn(self.app, args)
            text = None
            if fmt == "text":
                text = cmd.formatter(data) if cmd.formatter else None
            return {"ok": True, "data": data, "text": text}
        except CommandError as exc:
            self.counters.inc("command_errors")
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            self.counters.inc("command_failures")
            log.error("command_failed", cmd=" ".join(words), error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return {"ok": False, "error": f"command failed: {type(exc).__name__}: {exc}"}


class _FrameError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def _read_exactly(stream: trio.SocketStream, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(min(65536, n - len(buf)))
        if not chunk:
            if buf:
                raise _FrameError("truncated", f"connection closed after {len(buf)} of {n} bytes")
            return None
        buf += chunk
    return bytes(buf)


_EOF = object()


async def _read_frame(stream: trio.SocketStream, limit: int) -> Any:
    """One decoded request, or ``_EOF`` when the client closed between frames."""
    head = await _read_exactly(stream, 4)
    if head is None:
        return _EOF
    (length,) = _LEN.unpack(head)
    if length == 0 or length > limit:
        raise _FrameError("oversized" if length else "empty", f"frame length {length} out of range 1..{limit}")
    body = await _read_exactly(stream, length)
    if body is None:
        raise _FrameError("truncated", "connection closed before the frame body")
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:
        raise _FrameError("garbage", f"not a msgpack request: {type(exc).__name__}") from exc


async def _linger(conn: trio.socket.SocketType, limit: int = 1 << 20, seconds: float = 1.0) -> None:
    """Half-close and discard what the client still sends, so it reads our error reply
    instead of a connection reset (closing with unread input sends RST)."""
    try:
        conn.shutdown(socket.SHUT_WR)
        with trio.move_on_after(seconds):
            got = 0
            while got < limit:
                chunk = await conn.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
    except OSError:
        pass


def fallback_path(path: str) -> str:
    """Where the socket goes when *path*'s directory is not writable (an unprivileged run)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/flowplane-{os.getuid()}"
    return os.path.join(base, "flowplane", os.path.basename(path))


def resolve_socket(socket_path: str | None = None, config: str | None = None) -> str:
    """The control socket a client talks to: *socket_path*, else ``$FLOWPLANE_SOCKET``, else the
    ``system control-socket`` of *config* (or of /etc/flowplane/flowplane.yaml), else the default;
    the unprivileged fallback (:func:`fallback_path`) when only that one exists."""
    from .app import DEFAULTS
    from .config import DEFAULT_CONFIG, Config

    path = socket_path or os.environ.get("FLOWPLANE_SOCKET") or ""
    if not path:
        cfg_path = config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
        if cfg_path:
            try:
                sock = Config.load(cfg_path).get("system", "control-socket")
                path = sock if isinstance(sock, str) else ""
            except Exception:  # an unreadable config: the default path, the request then says what is wrong
                path = ""
        path = path or DEFAULTS["control-socket"]
    if not os.path.exists(path) and os.path.exists(fallback_path(path)):
        path = fallback_path(path)
    return path


def _default(obj: Any) -> Any:
    """Make numpy scalars/arrays and sets msgpack-able."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _in_use(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


# -- client (used by the CLI; synchronous) -----------------------------------------


def request(path: str, words: list[str], *, fmt: str = "text", timeout: float = 10.0) -> dict:
    """Send one command to a running daemon and return its reply map."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        payload = msgpack.packb({"cmd": list(words), "format": fmt}, use_bin_type=True)
        s.sendall(_LEN.pack(len(payload)) + payload)
        head = _recv_exactly(s, 4)
        (length,) = _LEN.unpack(head)
        if length > MAX_RESPONSE:
            raise ConnectionError(f"reply of {length} bytes is too large")
        return msgpack.unpackb(_recv_exactly(s, length), raw=False, strict_map_key=False)
    finally:
        s.close()


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError("the daemon closed the control connection")
        buf += chunk
    return bytes(buf)
