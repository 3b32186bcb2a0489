"""Secrets the service keeps in its data folder (the generated JWT secret; any key generated the same way).

A secret file is created once, whole, under a private name opened with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and
mode 0600, then hard-linked into place: processes starting together on one data folder all end up with
the one secret that won, never a half-written file, and a symbolic link planted at either name is never
followed. An existing secret file is opened with ``O_NOFOLLOW`` and refused (:class:`UnsafeSecretFile`,
a ``ValueError``, so the server refuses to start with one clear line) when it is not a regular file or
when its group or others may read it. Imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafeSecretFile(ValueError):
    """A secret file others may read, or that is not a plain file of its own."""


def read_private(path: Path) -> bytes:
    """The contents of the secret file at ``path``; ``FileNotFoundError`` when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeSecretFile(f"{path} is a symbolic link: a secret file must be a plain file") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())  # of the file opened, not of whatever the name points to later
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeSecretFile(f"{path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise UnsafeSecretFile(
                f"{path} may be read by group or others (mode {mode:04o}); the secret in it may be known: "
                f"`chmod 600 {path}` to keep it, or delete the file to have a new one made")
        return handle.read()


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The secret at ``path``, made by ``make()`` and kept there (mode 0600) when there is none yet."""
    try:
        return read_private(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # never replaced: another process's secret, once there, wins
            os.link(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)
    return read_private(path)
