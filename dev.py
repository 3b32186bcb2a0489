#!/usr/bin/env python3
"""Set up a local virtual environment and run the server or the tests; needs only Python >= 3.11.

    python3 dev.py serve [notify serve options]   # embedded defaults: SQLite + in-process broker
    python3 dev.py test  [pytest options]         # ruff, then every test (they need Debian's chromium, faketime)
    python3 dev.py lock                           # remake the lock files after a dependency change
    python3 dev.py audit                          # pip-audit over the lock files (needs its advisory database)

The virtual environment is installed from the lock files, every package pinned with its hashes
(``pip install --require-hashes``), then the project itself with ``--no-deps``. Each lock file records a
digest of what it was made from (pyproject.toml's dependencies, test extra, build requirements and Python
version): when those change, every command stops and says to run ``python3 dev.py lock``, which keeps
every pin it can and adds what is new.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("NOTIFY_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
LOCK = ROOT / "requirements.lock"  # the server's dependencies (the Docker image)
TEST_LOCK = ROOT / "requirements-test.lock"  # the same versions, plus the test extra (this script, CI)
TOOLS_LOCK = ROOT / "requirements-tools.lock"  # uv and pip-audit, which make and check the other two
TOOLS = ["uv==0.13.9", "pip-audit==2.10.1"]
TOOLS_VENV = Path(os.environ.get("NOTIFY_TOOLS_VENV", f"{VENV}-tools"))
# The platform the locks are resolved for; they carry the hashes of every file of each pinned version, so
# they install on any Linux with CPython 3.11.
PYTHON = ["--python-version", "3.11", "--python-platform", "x86_64-unknown-linux-gnu"]
DIGEST_LINE = "# inputs sha256: "
CHROMIUM = Path("/usr/bin/chromium")  # the browser tests drive Debian's build; Playwright downloads none
FAKETIME = Path("/usr/bin/faketime")


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)


def lock_inputs() -> str:
    """A digest of what the lock files are made from: pyproject.toml's dependencies, its test extra, its
    build requirements and its Python versions (not the rest of the file, which may change freely)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    inputs = {"dependencies": project.get("dependencies", []),
              "test": project.get("optional-dependencies", {}).get("test", []),
              "build": pyproject.get("build-system", {}).get("requires", []),
              "python": project.get("requires-python"), "tools": TOOLS}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_inputs(lock: Path) -> str | None:
    if not lock.exists():
        return None
    first = lock.read_text().split("\n", 1)[0]
    return first.removeprefix(DIGEST_LINE) if first.startswith(DIGEST_LINE) else None


def check_locks() -> None:
    """Stop, saying what to do, when pyproject.toml's dependencies changed since the locks were made."""
    stale = [lock.name for lock in (LOCK, TEST_LOCK, TOOLS_LOCK) if recorded_inputs(lock) != lock_inputs()]
    if stale:
        sys.exit(f"{', '.join(stale)} out of date: pyproject.toml's dependencies (or dev.py's TOOLS) changed "
                 "since the lock files were made. Run `python3 dev.py lock` and commit the lock files.")


def ensure_venv() -> None:
    """Create ``.venv`` and (re)install it from the test lock when the lock or pyproject.toml changed since
    the last install."""
    if sys.version_info < (3, 11):
        sys.exit(f"Python >= 3.11 is needed; this is {sys.version.split()[0]}")
    check_locks()
    stamp = VENV / ".installed"
    digest = hashlib.sha256(TEST_LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    install_locked(BIN, TEST_LOCK)
    # The project itself, editable, with no dependency of its own (all are in the lock) and built with the
    # setuptools the lock pinned rather than one fetched for an isolated build.
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", ".")
    stamp.write_text(digest)


def install_locked(bin_dir: Path, lock: Path) -> None:
    """Every package of ``lock``, each checked against its hashes; nothing that the lock does not name."""
    run(bin_dir / "python", "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", lock)


def ensure_tools() -> Path:
    """A separate virtual environment with uv and pip-audit, from their own lock."""
    tools_bin = TOOLS_VENV / ("Scripts" if os.name == "nt" else "bin")
    stamp = TOOLS_VENV / ".installed"
    digest = hashlib.sha256(TOOLS_LOCK.read_bytes()).hexdigest() if TOOLS_LOCK.exists() else "none"
    if stamp.exists() and stamp.read_text() == digest:
        return tools_bin
    if not (tools_bin / "python").exists():
        print(f"creating {TOOLS_VENV}", flush=True)
        venv.create(TOOLS_VENV, with_pip=True)
    if recorded_inputs(TOOLS_LOCK) == lock_inputs():
        install_locked(tools_bin, TOOLS_LOCK)
    else:  # a new tool version: installed by its pin once, then locked with hashes below
        run(tools_bin / "python", "-m", "pip", "install", "--quiet", *TOOLS)
    stamp.write_text(digest)
    return tools_bin


def compile_lock(tools_bin: Path, output: Path, sources: list[str], stdin: str, *options: str) -> None:
    """One lock file, with uv: every package pinned with the hashes of all its files, existing pins kept."""
    command = [str(tools_bin / "uv"), "pip", "compile", *sources, "--generate-hashes", "--quiet",
               "--custom-compile-command", "python3 dev.py lock", *PYTHON, *options, "-o", str(output)]
    subprocess.run(command, cwd=ROOT, check=True, input=stdin, text=True)
    output.write_text(f"{DIGEST_LINE}{lock_inputs()}\n{output.read_text()}")


def lock() -> None:
    """Remake the three lock files; a version already pinned stays unless the inputs rule it out
    (``UPGRADE=1`` moves every package to its newest allowed version)."""
    tools_bin = ensure_tools()
    upgrade = ["--upgrade"] if os.environ.get("UPGRADE") == "1" else []
    build = "\n".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"])
    compile_lock(tools_bin, TEST_LOCK, ["pyproject.toml", "-"], build, "--extra", "test", *upgrade)
    compile_lock(tools_bin, LOCK, ["pyproject.toml", "-"], build, "--constraint", str(TEST_LOCK.name))
    compile_lock(tools_bin, TOOLS_LOCK, ["-"], "\n".join(TOOLS), *upgrade)
    print(f"wrote {LOCK.name}, {TEST_LOCK.name} and {TOOLS_LOCK.name}; commit them", flush=True)


def audit() -> None:
    """pip-audit over the lock files: known vulnerabilities of every pinned version."""
    tools_bin = ensure_tools()
    for path in (TEST_LOCK, TOOLS_LOCK):
        run(tools_bin / "pip-audit", "--requirement", path, "--require-hashes", "--disable-pip",
            "--progress-spinner", "off", *sys.argv[2:])


# Debian packages the tests drive: a real browser, and libfaketime to run a node with its clock off.
DEBIAN_PACKAGES = {"chromium": CHROMIUM, "faketime": FAKETIME}


def ensure_debian_packages() -> None:
    """Install what is missing when we may (root with apt-get), else say what to do."""
    missing = [name for name, path in DEBIAN_PACKAGES.items() if not path.exists()]
    if not missing:
        return
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} (apt-get) for the tests", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        return
    sys.exit(f"{', '.join(missing)} missing: the tests need Debian's {' and '.join(missing)} "
             f"(sudo apt-get install {' '.join(missing)}), then run this again")


def main() -> None:
    command, *rest = sys.argv[1:] or ["help"]
    if command not in {"serve", "test", "setup", "lock", "audit"}:
        sys.exit(__doc__)
    if command == "lock":
        return lock()
    if command == "audit":
        return audit()
    ensure_venv()
    if command == "serve":
        os.execv(BIN / "notify", [str(BIN / "notify"), "serve", *rest])
    if command == "test":
        ensure_debian_packages()
        run(BIN / "ruff", "check", ".")
        os.execv(BIN / "python", [str(BIN / "python"), "-m", "pytest", *rest])


if __name__ == "__main__":
    main()
