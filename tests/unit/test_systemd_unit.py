"""The shipped systemd files, checked by systemd's own tools (skipped where they are missing).

``systemd-analyze verify`` checks that ExecStart= is executable; /usr/bin/flowplane does not exist
on a dev box, so it verifies a copy whose ExecStart= points at an executable that does exist
(this interpreter), and separately checks that the shipped file's only complaint is that path.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "flowplane.service"
SYSUSERS = SYSTEMD / "sysusers.d" / "flowplane.conf"
TMPFILES = SYSTEMD / "tmpfiles.d" / "flowplane.conf"
CAPS = {"CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"}
MAX_EXPOSURE = 3.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")


def _service_settings() -> dict[str, list[str]]:
    """[Service] key -> values, in file order (repeated keys accumulate)."""
    settings: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@needs_analyze
def test_verify_clean(tmp_path):
    copy = tmp_path / UNIT.name
    text = UNIT.read_text()
    assert "\nExecStart=/usr/bin/flowplane " in text
    copy.write_text(text.replace("\nExecStart=/usr/bin/flowplane ", f"\nExecStart={sys.executable} "))
    result = _run("systemd-analyze", "verify", "--man=no", str(copy))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
def test_verify_shipped_only_misses_the_binary():
    if Path("/usr/bin/flowplane").exists():
        pytest.skip("installed: test_verify_clean covers it")
    result = _run("systemd-analyze", "verify", "--man=no", str(UNIT))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["flowplane.service: Command /usr/bin/flowplane is not executable: No such file or directory"]


@needs_analyze
def test_security_exposure():
    result = _run("systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT))
    print(result.stdout)
    match = re.search(r"Overall exposure level for flowplane\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_notify_watchdog_reload():
    s = _service_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["WatchdogSec"] == ["30s"]
    assert s["Restart"] == ["on-failure"]
    assert s["ExecStart"] == ["/usr/bin/flowplane run -c /etc/flowplane/flowplane.yaml"]
    assert s["User"] == s["Group"] == ["flowplane"]
    assert s["RuntimeDirectory"] == s["StateDirectory"] == s["LogsDirectory"] == ["flowplane"]


def test_capabilities_exactly_three():
    s = _service_settings()
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        assert len(s[key]) == 1, key
        assert set(s[key][0].split()) == CAPS, key
        assert len(s[key][0].split()) == 3, key
    assert s["NoNewPrivileges"] == ["yes"]
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6", "AF_PACKET"}
    assert s["MemoryDenyWriteExecute"] == ["yes"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown in a temp root needs root")
@pytest.mark.skipif(not (shutil.which("systemd-sysusers") and shutil.which("systemd-tmpfiles")), reason="no systemd "
                                                                                                        "tools")
def test_sysusers_and_tmpfiles_apply(tmp_path):
    """Apply both snippets to an empty temp root (never the host's /etc or /var)."""
    (tmp_path / "etc").mkdir()
    result = _run("systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS))
    assert result.returncode == 0, result.stderr
    passwd = dict(line.split(":", 1) for line in (tmp_path / "etc/passwd").read_text().splitlines())
    groups = dict(line.split(":", 1) for line in (tmp_path / "etc/group").read_text().splitlines())
    _, uid, gid, _, home, shell = passwd["flowplane"].split(":")
    assert groups["flowplane"].split(":")[1] == gid
    assert (home, shell) == ("/var/lib/flowplane", "/usr/sbin/nologin")

    result = _run("systemd-tmpfiles", f"--root={tmp_path}", "--create", str(TMPFILES))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    for path in ("var/lib/flowplane", "var/log/flowplane"):
        st = (tmp_path / path).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (int(uid), int(gid), 0o750), path
    # The unit creates the same directories with the same modes.
    s = _service_settings()
    assert s["StateDirectoryMode"] == s["LogsDirectoryMode"] == ["0750"]


# MemoryDenyWriteExecute=yes as systemd 252 applies it (seccomp, EPERM): mmap/mmap2 with
# PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect with PROT_EXEC, shmat with SHM_EXEC.
_MDWE_SYSCALLS = {  # machine: (audit arch, mmap, mprotect, pkey_mprotect, shmat)
    "x86_64": (0xC000003E, 9, 10, 329, 30),
    "aarch64": (0xC00000B7, 222, 226, 288, 196),
}

_MDWE_CHILD = textwrap.dedent(
    """
    import ctypes, mmap, struct, sys
    arch, nr_mmap, nr_mprotect, nr_pkey, nr_shmat = map(int, sys.argv[1:6])
    def stmt(code, k): return struct.pack("HBBI", code, 0, 0, k)
    def jeq(k, jt, jf): return struct.pack("HBBI", 0x15, jt, jf, k)
    LD, AND, RET = 0x20, 0x54, 0x06
    ALLOW, EPERM = 0x7FFF0000, 0x00050001
    arg2 = 16 + 8 * 2  # seccomp_data.args[2], low word (little endian)
    prog = [
        stmt(LD, 4), jeq(arch, 1, 0), stmt(RET, ALLOW),
        stmt(LD, 0),
        jeq(nr_mmap, 4, 0), jeq(nr_mprotect, 6, 0), jeq(nr_pkey, 5, 0), jeq(nr_shmat, 7, 0),
        stmt(RET, ALLOW),
        stmt(LD, arg2), stmt(AND, 6), jeq(6, 8, 7),                   # mmap: W|X
        stmt(LD, arg2), stmt(AND, 4), jeq(4, 5, 4),                   # mprotect: X
        stmt(LD, arg2), stmt(AND, 0o100000), jeq(0o100000, 2, 1),     # shmat: SHM_EXEC
        stmt(RET, ALLOW), stmt(RET, ALLOW), stmt(RET, EPERM),
    ]
    code = b"".join(prog)
    buf = ctypes.create_string_buffer(code)
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Prog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0, ctypes.get_errno()              # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        sys.exit("filter not effective: W|X mmap succeeded")
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    if libc.mprotect(ctypes.c_void_p(addr), 4096, mmap.PROT_READ | mmap.PROT_EXEC) != -1:
        sys.exit("filter not effective: mprotect(PROT_EXEC) succeeded")
    assert libc.mprotect(ctypes.c_void_p(addr), 4096, mmap.PROT_READ) == 0

    import msgpack, numpy as np, structlog, trio, yaml, flowplane
    a = np.random.default_rng(1).integers(0, 1 << 16, 100_000, dtype=np.uint32)
    keys, counts = np.unique(a, return_counts=True)
    assert counts.sum() == a.size
    rec = np.frombuffer(bytes(range(240)), dtype=np.dtype([("src", ">u4"), ("dst", ">u4"), ("n", ">u8")]))
    assert rec.shape == (15,)
    m = np.arange(64.0).reshape(8, 8)
    assert float((m @ m.T).trace()) > 0
    assert msgpack.unpackb(msgpack.packb({"a": [1, 2]})) == {"a": [1, 2]}
    assert yaml.safe_load("a: [1, 2]") == {"a": [1, 2]}
    async def main():
        await trio.sleep(0.01)
    trio.run(main)
    print("ok")
    """
)


@pytest.mark.skipif(platform.machine() not in _MDWE_SYSCALLS, reason="syscall numbers for this arch not listed")
def test_dependencies_run_under_memory_deny_write_execute():
    """numpy, trio, msgpack, yaml, structlog and flowplane import and work with W^X enforced."""
    args = [str(n) for n in _MDWE_SYSCALLS[platform.machine()]]
    result = subprocess.run(
        [sys.executable, "-c", _MDWE_CHILD, *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
