"""Small shared helpers: atomic writes (files and folders), content hashes, file modes and
safe file names."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Suffix of the temporary files :func:`atomic_path` writes: a hidden ``.<name>.<random>.tmp``
#: next to the target.
TEMP_SUFFIX = ".tmp"
#: Prefix of the temporary folder a bundle is written into (:func:`atomic_folder`), which
#: :func:`remove_stray_temps` removes when a killed run left one.
BUNDLE_TEMP_PREFIX = ".bundle-"


def current_umask() -> int:
    """The process umask (read without changing it for longer than two system calls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path, *, directory: bool = False) -> None:
    """Give a file (0666) or folder (0777) the mode the umask allows.

    ``tempfile.mkstemp`` / ``mkdtemp`` create 0600 / 0700 entries, and renaming keeps
    the mode: without this a run folder, report or bundle on a shared server could be
    read by its author only.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    A crash or exception leaves the destination untouched (no half-written file
    that looks complete); the temporary file is removed. The result has the mode
    the umask allows, like a file written directly.

    A write that fails because the disk is full raises ``OSError(ENOSPC)`` naming
    ``path``, whatever the writer raised (``torch.save`` reports it as an unhelpful
    ``RuntimeError: ... unexpected pos``); any other ``OSError`` without a file name
    gets ``path`` as its file name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            honour_umask(tmp_path)
        os.replace(tmp_path, path)
    except Exception as exc:
        # checked before the partial file is removed, while the disk is still full
        if _disk_full(path.parent) and getattr(exc, "errno", None) != errno.ENOSPC:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(
    path: str | Path,
    *,
    ours: Callable[[Path], bool] | None = None,
    prefix: str | None = None,
) -> Iterator[Path]:
    """Yield a new, empty temporary folder next to ``path``; it becomes ``path`` on success.

    Everything is written into the temporary folder (``<prefix><random>``, by default
    ``.<name>-<random>``, beside ``path``). If the block raises, that folder is removed and
    ``path`` is left as it was; otherwise the folder gets the mode the umask allows and is
    renamed onto ``path``. An earlier ``path`` is moved aside first and removed once the
    new folder is in place, so ``path`` is never half-written.

    Parameters
    ----------
    path : Path
        The folder to write (its parent is created if needed).
    ours : callable, optional
        Says whether an existing folder at ``path`` is one radfusion wrote (and may
        replace). Without it only an empty folder is replaced.
    prefix : str, optional
        Name prefix of the temporary folder (and of ``<prefix>old-<random>`` for the folder
        being replaced), for :func:`remove_stray_temps` to recognise.

    Raises
    ------
    FileExistsError
        ``path`` exists and is not a folder radfusion may replace: checked before the
        block runs and again before the rename; nothing is written over it.
    """
    path = Path(path)
    prefix = prefix or f".{path.name}-"
    _check_replaceable(path, ours)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    try:
        yield tmp
        _check_replaceable(path, ours)
        honour_umask(tmp, directory=True)  # mkdtemp made it 0700
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{prefix}old-", dir=path.parent))
            path.rename(old / path.name)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _check_replaceable(path: Path, ours: Callable[[Path], bool] | None) -> None:
    """Refuse to replace anything at ``path`` but an empty folder or one ``ours`` accepts."""
    if not path.exists() and not path.is_symlink():
        return
    folder = path.is_dir() and not path.is_symlink()
    if folder and (not any(path.iterdir()) or (ours is not None and ours(path))):
        return
    raise FileExistsError(
        errno.EEXIST,
        "exists and radfusion did not write it; move it away or choose another place",
        str(path),
    )


#: Free space (bytes) under which a failed write is blamed on a full disk.
_FULL_DISK_BYTES = 1 << 20


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < _FULL_DISK_BYTES
    except OSError:
        return False


def remove_stray_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed process left in ``folder`` (recursively).

    Only names :func:`atomic_path` makes (``.<name>.<random>.tmp``) and the ``.bundle-*``
    folders of an interrupted bundle export are touched.

    Returns
    -------
    list of Path
        What was removed.
    """
    import shutil

    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.rglob(f".*{TEMP_SUFFIX}"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    for p in folder.glob(f"{BUNDLE_TEMP_PREFIX}*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON (sorted keys, indented) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def json_sha256(obj: Any) -> str:
    """SHA-256 of an object's canonical JSON form (sorted keys)."""
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    ).hexdigest()


def safe_filename(name: str, fill: str = "_", max_length: int | None = None) -> str:
    """``name`` usable as one file or folder name: every character that is not a letter, a
    digit, ``.``, ``_`` or ``-`` (a path separator, a space, ``=`` ...) becomes ``fill``, one
    for one, and the result is cut to ``max_length`` characters (no limit by default).

    Examples
    --------
    >>> safe_filename("center=H1", "-")
    'center-H1'
    >>> safe_filename("a/b c")
    'a_b_c'
    """
    safe = "".join(ch if ch.isalnum() or ch in "-_." else fill for ch in name)
    return safe if max_length is None else safe[:max_length]


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
