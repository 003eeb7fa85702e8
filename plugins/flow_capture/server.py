"""DTCP listeners (UDP and TCP on each service port) and the timer loop.

:func:`run_service` is the plugin's background task: it opens the copy and
notification sockets, binds a UDP socket and a TCP listener on every
configured ``service-port`` (port 0: one ephemeral port, the same number for
UDP and TCP), reports ``task_status.started(bound)``, sends a Restart
notification to every control source, then serves requests and runs
:meth:`FlowCapture.sweep` every ``sweep_interval`` seconds.

UDP: one datagram is one request; the reply goes back to the sender.  TCP:
requests are cut at the blank line that ends each one (at most
``dtcp.MAX_MESSAGE`` bytes); a connection idle for
:data:`TCP_IDLE_TIMEOUT` seconds is closed.  Nothing a client sends can stop
the service: every connection and datagram is handled under a guard.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

import structlog
import trio

from . import dtcp
from .dtcp import DtcpError

log = structlog.get_logger("flowplane.flow_capture")

TCP_IDLE_TIMEOUT = 300.0
TCP_MAX_CONNECTIONS = 64
BIND_ATTEMPTS = 20


def peer_host(addr) -> str:
    """The peer's address as a plain string (IPv4-mapped IPv6 unwrapped)."""
    host = addr[0].split("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _bind_pair(address: str, port: int, hint: int = 0) -> tuple[socket.socket, socket.socket]:
    """A bound UDP socket and a listening TCP socket on the same port (port 0: pick one free for both).

    ``SO_REUSEPORT`` lets a reload's new listeners bind while the replaced ones
    are still closing; *hint* is the port a replaced engine had for port 0.
    """
    fam = _family(address)
    last: OSError | None = None
    for attempt in range(BIND_ATTEMPTS if port == 0 else 1):
        u = socket.socket(fam, socket.SOCK_DGRAM)
        t = socket.socket(fam, socket.SOCK_STREAM)
        try:
            for s in (u, t):
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            u.bind((address, hint if (port == 0 and attempt == 0 and hint) else port))
            t.bind((address, u.getsockname()[1]))
            t.listen(64)
            return u, t
        except OSError as exc:
            u.close()
            t.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
    assert last is not None
    raise last


def bind_listeners(engine) -> list[tuple[int, socket.socket, socket.socket]]:
    """Bind every configured service port; ``"::"`` falls back to ``0.0.0.0`` without IPv6."""
    ports = sorted({s.cfg.service_port for s in engine.sources.values()})
    address = engine.cfg.listen_address
    out = []
    try:
        for p in ports:
            try:
                u, t = _bind_pair(address, p, engine.port_hints.get(p, 0))
            except OSError as exc:
                if address == "::" and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    address = "0.0.0.0"
                    u, t = _bind_pair(address, p, engine.port_hints.get(p, 0))
                else:
                    raise
            out.append((p, u, t))
    except BaseException:
        for _, u, t in out:
            u.close()
            t.close()
        raise
    return out


async def run_service(engine, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """The background task: listeners, Restart notifications, the sweep timer."""
    engine.open()
    try:
        listeners = bind_listeners(engine)
    except OSError as exc:
        log.error("dfc_listen_failed", address=engine.cfg.listen_address, error=str(exc))
        raise
    try:
        async with trio.open_nursery() as nursery:
            for p, u, t in listeners:
                bound = u.getsockname()[1]
                engine.bound[p] = bound
                nursery.start_soon(_serve_udp, engine, trio.socket.from_stdlib_socket(u))
                nursery.start_soon(_serve_tcp, engine, trio.socket.from_stdlib_socket(t))
                log.info("dfc_listening", address=u.getsockname()[0], port=bound, transports=["udp", "tcp"])
            for name in engine.sources:
                engine.queue_notification(name, "Restart", [])
            engine.send_notifications()
            task_status.started(dict(engine.bound))
            while True:
                await trio.sleep(engine.sweep_interval)
                engine.sweep()
    finally:
        for _, u, t in listeners:
            u.close()
            t.close()


async def _serve_udp(engine, sock) -> None:
    while True:
        try:
            data, addr = await sock.recvfrom(65535)
        except OSError as exc:  # e.g. ICMP errors surfacing on the socket: keep serving
            engine.stats[f"udp_receive_errors.{errno.errorcode.get(exc.errno or 0, 'OSError')}"] += 1
            continue
        try:
            reply = engine.handle(data, peer_host(addr), "udp")
        except Exception as exc:  # a bug must not take the listener down
            engine.stats["internal_errors"] += 1
            log.error("dfc_request_failed", error=f"{type(exc).__name__}: {exc}", transport="udp")
            continue
        if reply:
            try:
                await sock.sendto(reply, addr)
            except OSError:
                engine.stats["reply_send_errors"] += 1


async def _serve_tcp(engine, sock) -> None:
    listener = trio.SocketListener(sock)
    limiter = trio.CapacityLimiter(TCP_MAX_CONNECTIONS)

    async def handler(stream: trio.SocketStream) -> None:
        if limiter.available_tokens == 0:
            engine.stats["tcp_refused_connection_limit"] += 1
            await stream.aclose()
            return
        async with limiter:
            await _tcp_connection(engine, stream)

    await trio.serve_listeners(handler, [listener])


async def _tcp_connection(engine, stream: trio.SocketStream) -> None:
    try:
        peer = peer_host(stream.socket.getpeername())
    except OSError:
        await stream.aclose()
        return
    engine.stats["tcp_connections"] += 1
    buf = bytearray()
    try:
        async with stream:
            while True:
                with trio.move_on_after(TCP_IDLE_TIMEOUT) as idle:
                    chunk = await stream.receive_some(65536)
                if idle.cancelled_caught:
                    engine.stats["tcp_idle_closed"] += 1
                    return
                if not chunk:
                    return
                buf += chunk
                try:
                    messages = dtcp.split_stream(buf)
                except DtcpError as exc:
                    engine.stats["control_packets"] += 1
                    engine.stats[f"drops.{exc.kind}"] += 1
                    await stream.send_all(dtcp.response(exc.code, [("ERROR", str(exc))]))
                    return
                for raw in messages:
                    try:
                        reply = engine.handle(raw, peer, "tcp")
                    except Exception as exc:
                        engine.stats["internal_errors"] += 1
                        log.error("dfc_request_failed", error=f"{type(exc).__name__}: {exc}", transport="tcp")
                        return
                    if reply:
                        await stream.send_all(reply)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        engine.stats["tcp_broken"] += 1
