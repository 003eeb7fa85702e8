"""Operational commands of ``services rpm rfc2544-benchmarking`` and their Junos-style text.

* ``test services rpm rfc2544-benchmarking test NAME start|stop``
* ``show services rpm rfc2544-benchmarking`` (every test id, one line each)
* ``show services rpm rfc2544-benchmarking test-id N [detail|summary]``
"""

from __future__ import annotations

import time

from flowplane.api import CommandError, Table, configured_object

from .frames import L1_OVERHEAD

BASE = "services rpm rfc2544-benchmarking"
_ITERATIONS = Table("  {iteration:>4} {kind:<8}{offered_kbps:>14,.1f}{sent:>11}{received:>11}{loss_percent:>9.3f}"
                    "{min:>10}{avg:>10}{max:>10}{out_of_order:>6}{duplicates:>6}  {result}",
                    iteration="Iter", kind="Kind", offered_kbps="Offered kbps", sent="Tx frames", received="Rx frames",
                    loss_percent="Loss %", min="Min us", avg="Avg us", max="Max us", out_of_order="OOO",
                    duplicates="Dup", result="Result")
_RUNS = Table("{test_id:>7}  {test_name:<20}{mode:<24}{test_type:<18}{state:<10}{status}", test_id="Test id",
              test_name="Test name", mode="Mode", test_type="Type", state="State", status="Status")


def _service(app):
    from .service import PLUGIN_OBJECT

    return configured_object(app, PLUGIN_OBJECT,
                             "rfc2544-benchmarking is not configured (services rpm rfc2544-benchmarking)")


def test_request(app, args) -> dict:
    if len(args) != 2 or args[1] not in ("start", "stop"):
        raise CommandError("usage: test services rpm rfc2544-benchmarking test NAME start|stop")
    svc = _service(app)
    try:
        return svc.start(args[0]) if args[1] == "start" else svc.stop(args[0])
    except (KeyError, ValueError) as exc:
        raise CommandError(exc.args[0]) from exc


def show_all(app, args) -> dict:
    if args:
        raise CommandError("usage: show services rpm rfc2544-benchmarking [test-id N [detail|summary]]")
    svc = _service(app)
    return {"tests": sorted(svc.cfg.tests), "runs": [r.summary() for r in svc.runs.values()]}


def show_test_id(app, args) -> dict:
    if not args or len(args) > 2 or (len(args) == 2 and args[1] not in ("detail", "summary")):
        raise CommandError("usage: show services rpm rfc2544-benchmarking test-id N [detail|summary]")
    try:
        test_id = int(args[0])
    except ValueError as exc:
        raise CommandError(f"test-id must be a number, got {args[0]!r}") from exc
    try:
        run = _service(app).get(test_id)
    except KeyError as exc:
        raise CommandError(exc.args[0]) from exc
    detail = len(args) == 2 and args[1] == "detail"
    return {**(run.detail() if detail else run.summary()), "view": "detail" if detail else "summary"}


def _t(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts)) if ts else "-"


def _v(x, fmt="{:,.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def format_run(d: dict) -> str:
    lines = ["Test information :",
             f"  Test id: {d['test_id']}, Test name: {d['test_name']}, Test mode: {d['mode']}",
             f"  Test type: {d['test_type'] or 'reflect'}, Family: {d['family']}, Test interface: {d['interface']}",
             f"  Packet size: {', '.join(map(str, d['packet_sizes'])) or '-'}",
             f"  Test state: {d['state']}" + (f", Status: {d['reason']}" if d["reason"] else ""),
             f"  Test start time: {_t(d['started'])}",
             f"  Test end time: {_t(d['ended'])}, Elapsed: {d['elapsed']} s"]
    if d.get("warning"):
        lines.append(f"  Warning: {d['warning']}")
    if d.get("progress") and d["state"] == "running":
        lines.append(f"  Progress: {d['progress']}")
    conf = d.get("configuration")
    if conf:
        lines.append("Test configuration :")
        for k, v in conf.items():
            lines.append(f"  {k.replace('_', '-')}: {v}")
    r = d.get("reflector")
    if r:
        s = r["settings"]
        lines += ["Reflector :",
                  f"  Reflect mode: {s['reflect_mode']}, ip-swap: {'yes' if s['ip_swap'] else 'no'}, "
                  f"udp-tcp-port-swap: {'yes' if s['udp_tcp_port_swap'] else 'no'}, signature check: "
                  f"{'yes' if s['signature_check'] else 'disabled'}",
                  f"  Test frames received: {r['received']}, reflected: {r['reflected']}, "
                  f"dropped: {r['dropped_total']}, send failures: {r['send_failed']}",
                  "  Dropped by reason: " + ", ".join(f"{k} {v}" for k, v in r["dropped"].items()),
                  f"  Other frames ignored: {r['ignored']}",
                  f"  Last test frame: {_t(r['last_frame'])}"]
    for s in d.get("results", []):
        lines.append(f"Results, packet size {s['size']} bytes (rates include {L1_OVERHEAD} bytes of preamble "
                     "and inter-frame gap per frame) :")
        if s.get("ceiling_fps"):
            lines.append(f"  Host ceiling (self-calibration): {s['ceiling_fps']:,.1f} fps")
        if d.get("view") == "detail" or d.get("view") is None:
            lines += _ITERATIONS.lines(
                dict(it, min=_v(it["latency_min_us"]), avg=_v(it["latency_avg_us"]), max=_v(it["latency_max_us"]),
                     result="pass" if it["passed"] else "fail") for it in s["iterations"])
        if "throughput" in s:
            t = s["throughput"]
            lines.append(f"  Throughput: {t['kbps']:,.1f} kbps ({t['fps']:,.1f} fps; {t['frame_kbps']:,.1f} kbps "
                         "of frames without preamble, gap and FCS)")
        if "latency_us" in s:
            lat = s["latency_us"]
            lines.append(f"  Latency at {lat['at_fps']:,.1f} fps (us): min {_v(lat['min'])}, avg {_v(lat['avg'])}, "
                         f"max {_v(lat['max'])}")
        if "frame_loss" in s:
            lines.append("  Frame loss rate: " + ", ".join(f"{x['offered_percent']:g} % -> {x['loss_percent']:g} %"
                                                          for x in s["frame_loss"]))
        if "back_to_back_frames" in s:
            lines.append(f"  Back-to-back frames: {s['back_to_back_frames']:,.0f}")
    return "\n".join(lines) + "\n"


def format_all(d: dict) -> str:
    lines = [f"Configured tests: {', '.join(d['tests']) or 'none'}"]
    lines += _RUNS.lines(dict(r, test_type=r["test_type"] or "-", status=r["reason"] or r.get("warning") or "")
                         for r in d["runs"])
    return "\n".join(lines) + "\n"


def format_request(d: dict) -> str:
    return f"Test {d['test_name']} (test-id {d['test_id']}): {d['state']}\n"


def register(register) -> None:
    register(f"test {BASE} test", test_request, help="start or stop an RFC 2544 test: NAME start|stop",
             formatter=format_request)
    register(f"show {BASE}", show_all, help="RFC 2544 tests and their runs", formatter=format_all)
    register(f"show {BASE} test-id", show_test_id, help="one RFC 2544 run: N [detail|summary]",
             formatter=format_run)
