"""Throw-away venvs with flowplane really pip-installed, for tests of what plugin authors do.

A fresh venv is created without the test environment's site-packages.
flowplane (copied from the working tree) is pip-installed *into* it, so the
only way ``flowplane`` can find a third-party plugin is that plugin's
``flowplane.plugins`` entry point in installed metadata.

The installs are offline and fast:

* The new venv reaches the dependencies (numpy, trio, pluggy, setuptools,
  pytest...) through a ``.pth`` file naming a directory of symlinks to the
  running test venv's packages.  Every ``flowplane*`` entry is left out.
* Installs run with ``pip --no-deps --no-build-isolation --no-index`` from
  copies in tmp, so nothing is written into the source tree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# *.c / *.so: Cython output and the extension built in the working tree; the offline install builds its own
# (without Cython in the test venv the optional extension is skipped, and the Python kernels run)
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", "*.c", "*.so")


class Venv:
    """A throw-away venv and a way to run its ``flowplane`` script."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        self.python = str(self.bin / "python")
        self.workdir = workdir
        env = {k: v for k, v in os.environ.items()
               if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "FLOWPLANE_DISABLED_PLUGINS",
                            "FLOWPLANE_SOCKET")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.env = env

    def pip_install(self, src: Path) -> None:
        # a copy, so the build leaves no build/ or *.egg-info in the source tree
        copy = self.workdir / f"src-{src.name}"
        shutil.copytree(src, copy, ignore=COPY_IGNORE)
        subprocess.run([sys.executable, "-m", "pip", "--python", self.python, "install", "--quiet",
                        "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir", str(copy)],
                       check=True, env=self.env, cwd=self.workdir, capture_output=True, timeout=120)

    def flowplane(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "flowplane"), *args], env={**self.env, **(env or {})},
                              cwd=self.workdir, capture_output=True, text=True, timeout=60)

    def plugins(self, *args: str, env: dict | None = None) -> dict[str, dict]:
        res = self.flowplane("plugins", "--json", *args, env=env)
        assert res.returncode == 0, res.stderr
        return {row["name"]: row for row in json.loads(res.stdout)}


def _flowplane_source(tmp: Path) -> Path:
    """The flowplane distribution as in the working tree (pyproject + core/ + plugins/)."""
    dst = tmp / "flowplane"
    dst.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dst / name)
    for name in ("core", "plugins"):
        shutil.copytree(ROOT / name, dst / name, ignore=COPY_IGNORE)
    return dst


def _deps_dir(tmp: Path) -> Path:
    """Symlinks to the running environment's packages, minus anything flowplane."""
    deps = tmp / "deps"
    deps.mkdir()
    paths = sysconfig.get_paths()
    for site in {Path(paths["purelib"]).resolve(), Path(paths["platlib"]).resolve()}:
        for entry in site.iterdir():
            n = entry.name.lower()
            if n.startswith(("flowplane", "__editable__", "pip", "__pycache__")) or n.endswith(".pth"):
                continue
            if not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry.resolve())
    return deps


def make_venv(tmp: Path) -> Venv:
    """A venv in *tmp* with flowplane from the working tree installed (skips when pip is missing)."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in the test environment")
    path = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    v = Venv(path, tmp)
    site = subprocess.run([v.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, env=v.env).stdout.strip()
    Path(site, "00-test-deps.pth").write_text(f"{_deps_dir(tmp)}\n")
    v.pip_install(_flowplane_source(tmp))
    return v
