"""Whose files these are: a ledger or a state directory someone else could have written is
refused before a byte of it is believed.

What these files hold decides what the suite signals, deletes and restores, so they are
trusted only as far as the operator's own private files are: owned by the user running
the suite, not writable by group or others, not a symbolic link, and reached through
directories nobody else can rename (owned by root or the user; writable by others only
with the sticky bit, as /tmp is, where nobody can replace what we own). ssh's StrictModes
makes the same checks of authorized_keys.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from inferchaos.ground.errors import UsageError


class NotPrivate(UsageError):
    """A file or directory the suite would trust that another user could have written."""


def _why_not(st: os.stat_result, kind: str) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if kind == "dir" and not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _check_ancestors(path: Path, what: str) -> None:
    for parent in Path(os.path.realpath(path.parent)).joinpath("x").parents:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            continue  # made later, by the suite, 0700
        except OSError as exc:
            raise NotPrivate(f"{what} {path}: cannot check {parent}: {exc.strerror}") from None
        if st.st_uid not in (0, os.geteuid()):
            raise NotPrivate(f"{what} {path}: {parent} is owned by uid {st.st_uid}, who could replace it: refused")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise NotPrivate(f"{what} {path}: {parent} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}), "
                             "who could replace what it holds: refused")


def check_private(path: Path | str, kind: str, what: str) -> None:
    """Refuse `path` (a "file" or a "dir") unless only this user could have written it.
    A path that does not exist passes (nothing to believe yet), its directories checked."""
    path = Path(path).absolute()
    _check_ancestors(path, what)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    why = _why_not(st, kind)
    if why:
        raise NotPrivate(f"{what} {path} {why}: refused (another user could have written it)")


def check_open_file(fd: int, path: Path | str, what: str) -> None:
    """The same checks of a file already opened (O_NOFOLLOW): what was opened is what counts."""
    why = _why_not(os.fstat(fd), "file")
    if why:
        raise NotPrivate(f"{what} {path} {why}: refused (another user could have written it)")


def private_dir(path: Path | str, what: str) -> Path:
    """Create `path` (and its missing parents) 0700, or check the one already there."""
    path = Path(path).absolute()
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass
    check_private(path, "dir", what)
    return path
