#!/usr/bin/env python3
"""Set up a local virtual environment and run the server or the tests; needs only Python >= 3.11.

    python3 dev.py serve [notify serve options]   # embedded defaults: SQLite + in-process broker
    python3 dev.py test  [pytest options]         # ruff, then every test (they need Debian's chromium, faketime)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("NOTIFY_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
EXTRAS = ".[test]"
CHROMIUM = Path("/usr/bin/chromium")  # the browser tests drive Debian's build; Playwright downloads none
FAKETIME = Path("/usr/bin/faketime")


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)


def ensure_venv() -> None:
    """Create ``.venv`` and (re)install the project when pyproject.toml changed since the last install."""
    if sys.version_info < (3, 11):
        sys.exit(f"Python >= 3.11 is needed; this is {sys.version.split()[0]}")
    stamp = VENV / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", EXTRAS)
    stamp.write_text(digest)


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
    if command not in {"serve", "test", "setup"}:
        sys.exit(__doc__)
    ensure_venv()
    if command == "serve":
        os.execv(BIN / "notify", [str(BIN / "notify"), "serve", *rest])
    if command == "test":
        ensure_debian_packages()
        run(BIN / "ruff", "check", ".")
        os.execv(BIN / "python", [str(BIN / "python"), "-m", "pytest", *rest])


if __name__ == "__main__":
    main()
