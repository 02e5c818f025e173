"""A run is a folder (the nnU-Net habit): config as run, data fingerprint, versions, logs,
stage markers and every artefact, so stages resume and results are traceable. Where each
file lives is :class:`radfusion.layout.RunLayout` (its docstring draws the tree);
:class:`RunFolder` is the writer's side: provenance, the log, stage markers and keys.

A stage is skipped when its marker exists, records the same input key (a hash of the
config sections it reads, the manifest fingerprint, the content hashes of the data files
it reads and the keys of the stages it depends on) and every file the stage wrote still
has the SHA-256 the marker recorded (a truncated or corrupted artefact makes the stage
run again, from its caches). A changed image or mask therefore reruns exactly the stages
that read it, and those downstream of them; file hashes are kept in
``stages/data_files.json`` and recomputed only for files whose size or modification time
changed. A run killed at any point leaves no marker for the stage in flight, so it is
redone; extraction and training resume from their own caches/checkpoints, and the
temporary files the killed process left are removed when the next run starts.

A run folder is only ever created new, or reused when it already is one: a folder
holding other files (a user's ``config.yaml``) is refused, so nothing of the user's is
overwritten.

One process writes a run folder at a time: :meth:`RunFolder.lock` takes an exclusive
operating-system lock (``flock``) on ``stages/run.lock``, which also records the holder's
PID, host and start time. A second ``radfusion run`` on the same folder is refused
(:class:`RunFolderBusyError`, exit status 2) with the holder named; the operating system drops
the lock of a killed process, so its stale ``run.lock`` is simply taken over (and logged).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radfusion.config import StudyConfig
from radfusion.errors import ConfigError
from radfusion.layout import RunLayout
from radfusion.reproducibility import compute_environment
from radfusion.utils import (
    TEMP_SUFFIX,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    json_sha256,
)
from radfusion.versions import library_versions

log = logging.getLogger("radfusion.pipeline")


def check_run_folder(path: str | Path) -> None:
    """Refuse a run folder that radfusion would have to write over someone else's files.

    A new or empty folder, or an existing radfusion run folder (it has ``stages/``),
    is fine.

    Raises
    ------
    ConfigError
        ``path`` is a file, or a folder with other content (e.g. the config's own
        folder holding the user's ``config.yaml``).
    """
    path = Path(path)
    stages = RunLayout(path).stages_dir
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run folder {path} is a file; set output_dir (or --run-dir) to a folder")
    if path.is_dir() and not stages.is_dir() and any(path.iterdir()):
        raise ConfigError(
            f"run folder {path} already holds files that radfusion did not write (it would "
            "overwrite e.g. a config.yaml there); set output_dir (or --run-dir) to a new or "
            "empty folder"
        )


class RunFolderBusyError(ConfigError):
    """The run folder is being written by another radfusion process."""


class RunLock:
    """An exclusive lock on a run folder, held by one process at a time.

    Parameters
    ----------
    path : Path
        The lock file (``stages/run.lock``); created if needed, never removed (an empty
        file means "released").
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise :class:`RunFolderBusyError` naming its holder.

        The lock is the operating system's (``flock``): it dies with the process that held
        it, so a lock file left by a killed run is stale and taken over (logged).
        """
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another open file holds it
            holder = _holder(_read_fd(fd))
            os.close(fd)
            run = self.path.parent.parent
            raise RunFolderBusyError(
                f"run folder {run} is in use by another radfusion process ({holder}); wait "
                "for it to finish, or stop it, then run the same command again"
            ) from None
        stale = _read_fd(fd)
        if stale:
            log.warning(
                "run folder %s: took over the lock left by a run that did not finish (%s); "
                "its unfinished stage is redone",
                self.path.parent.parent,
                _holder(stale),
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Empty the lock file (nothing stale is left behind) and drop the lock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock


def _read_fd(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()


def _holder(text: str) -> str:
    """The holder of a lock as words (from the JSON record the holder wrote)."""
    try:
        rec = json.loads(text)
        return f"PID {rec['pid']} on {rec['host']}, started {rec['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


class RunFolder:
    """The folder of one study run.

    Parameters
    ----------
    path : Path
        The run folder (created if needed).
    config : StudyConfig
        The configuration being run; written to ``config.yaml``.

    Attributes
    ----------
    layout : RunLayout
        Where each file of the run lives.
    """

    def __init__(self, path: str | Path, config: StudyConfig) -> None:
        self.path = Path(path)
        self.layout = RunLayout(self.path)
        self.config = config
        check_run_folder(self.path)
        for sub in (self.layout.logs_dir, self.layout.stages_dir):
            sub.mkdir(parents=True, exist_ok=True)
        self._handler: logging.Handler | None = None
        self._previous_level = logging.NOTSET
        self._lock = RunLock(self.layout.lock_file)

    # --- one writer at a time --------------------------------------------------------
    def lock(self) -> None:
        """Lock the folder for this process (before anything is written into it).

        Raises
        ------
        RunFolderBusyError
            Another process is writing the run folder.
        """
        self._lock.acquire()

    def unlock(self) -> None:
        self._lock.release()

    # --- paths -------------------------------------------------------------------
    def marker(self, stage: str) -> Path:
        return self.layout.stage_marker(stage)

    # --- provenance --------------------------------------------------------------
    def write_provenance(self) -> None:
        """config.yaml and versions.json (with the seed and the compute environment)."""
        atomic_write_text(self.layout.config, self.config.to_yaml())
        versions = library_versions()
        versions["seed"] = self.config.seed
        versions["compute"] = compute_environment(self.config.reproducibility)
        atomic_write_json(self.layout.versions, versions)

    def attach_log(self) -> None:
        """Append this process's radfusion log records to ``logs/run.log``."""
        handler = logging.FileHandler(self.layout.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        logger = logging.getLogger("radfusion")
        logger.addHandler(handler)
        # INFO records must reach the file; the caller's level comes back in detach_log
        self._previous_level = logger.level
        logger.setLevel(logging.INFO)
        self._handler = handler

    def detach_log(self) -> None:
        if self._handler is not None:
            logger = logging.getLogger("radfusion")
            logger.removeHandler(self._handler)
            logger.setLevel(self._previous_level)
            self._handler.close()
            self._handler = None

    # --- stage bookkeeping ---------------------------------------------------------
    def stage_key(self, stage: str, parts: dict[str, Any]) -> str:
        """Hash of what a stage's result depends on."""
        return json_sha256({"stage": stage, **parts})

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Size and modification time of every stage output file now in the folder."""
        out: dict[str, tuple[int, int]] = {}
        # not outputs: provenance, bookkeeping, sub-runs and content-keyed caches (which
        # check themselves)
        not_outputs = self.layout.bookkeeping

        def walk(folder: Path, top: bool) -> None:
            for p in folder.iterdir():
                if (top and p.name in not_outputs) or p.is_symlink():
                    continue
                if p.is_dir():
                    if not RunLayout.is_cache(p.name):
                        walk(p, False)
                elif p.is_file() and not p.name.endswith(TEMP_SUFFIX):
                    st = p.stat()
                    out[str(p.relative_to(self.path))] = (st.st_size, st.st_mtime_ns)

        walk(self.path, True)
        return out

    def written_since(self, before: dict[str, tuple[int, int]]) -> dict[str, str]:
        """SHA-256 of the files created or changed since ``before`` (a :meth:`snapshot`)."""
        now = self.snapshot()
        return {
            rel: file_sha256(self.path / rel)
            for rel, stat in sorted(now.items())
            if before.get(rel) != stat
        }

    def damaged_outputs(self, stage: str) -> list[str]:
        """Files a finished stage wrote that are now missing, truncated or changed."""
        try:
            outputs = json.loads(self.marker(stage).read_text()).get("outputs", {})
        except (OSError, json.JSONDecodeError):
            return []
        bad = []
        for rel, digest in outputs.items():
            f = self.path / rel
            if not f.is_file() or file_sha256(f) != digest:
                bad.append(rel)
        return bad

    def is_done(self, stage: str, key: str) -> bool:
        """Whether ``stage`` finished with ``key`` and its outputs are intact."""
        path = self.marker(stage)
        if not path.is_file():
            return False
        try:
            if json.loads(path.read_text()).get("key") != key:
                return False
        except (json.JSONDecodeError, OSError):
            return False
        damaged = self.damaged_outputs(stage)
        if damaged:
            log.warning(
                "stage %s: %s missing, truncated or modified since it was written; redoing "
                "the stage from its caches",
                stage,
                ", ".join(str(self.path / d) for d in damaged),
            )
            return False
        return True

    def done_key(self, stage: str) -> str | None:
        """The key recorded by a finished stage (None when not finished)."""
        try:
            return json.loads(self.marker(stage).read_text()).get("key")
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def mark_done(self, stage: str, key: str, seconds: float, info: dict | None = None) -> None:
        atomic_write_json(
            self.marker(stage),
            {
                "stage": stage,
                "key": key,
                "seconds": round(seconds, 2),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                **(info or {}),
            },
        )

    def content_hashes(self, paths: Iterable[str | Path]) -> dict[str, str | None]:
        """SHA-256 of each file's bytes, re-hashed only when its size or mtime changed.

        The table of the last run (``stages/data_files.json``: path -> size, mtime, hash)
        gives the hash of a file whose size and modification time are unchanged; any
        other file is read and hashed. A file whose content differs from the last run is
        named in the log. Missing or unreadable files hash to None (the validate stage
        reports them).

        Parameters
        ----------
        paths : iterable of path
            The data files (images, masks, second-reader masks, weight files).

        Returns
        -------
        dict
            ``str(path)`` -> hex digest or None.
        """
        table_path = self.layout.data_files
        try:
            previous: dict[str, dict[str, Any]] = json.loads(table_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            previous = {}
        table: dict[str, dict[str, Any]] = {}
        out: dict[str, str | None] = {}
        changed: list[str] = []
        for p in dict.fromkeys(str(p) for p in paths):
            old = previous.get(p, {})
            try:
                st = Path(p).stat()
                if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
                    digest = old["sha256"]
                else:
                    digest = file_sha256(p)
            except OSError:  # missing or unreadable: the validate stage names it
                out[p] = None
                continue
            if old.get("sha256") not in (None, digest):
                changed.append(p)
            table[p] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            out[p] = digest
        for p in changed:
            log.warning("data file changed since the last run: %s", p)
        merged = {**previous, **table}
        if merged != previous:
            atomic_write_json(table_path, merged)
        return out

    def invalidate_from(self, stages: list[str]) -> None:
        """Remove the markers of ``stages`` so they are redone."""
        for s in stages:
            self.marker(s).unlink(missing_ok=True)
