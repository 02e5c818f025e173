"""Small shared helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from radfusion.utils import safe_filename


def test_safe_filename_replaces_each_unsafe_character_and_keeps_letters() -> None:
    # Fold folders (pipeline/folds.py) are named this way; a resumed run must find them again.
    assert safe_filename("center=H1", "-") == "center-H1"
    assert safe_filename("center=Zürich 2/b", "-") == "center-Zürich-2-b"
    assert safe_filename("r1f3.v_2-x", "-") == "r1f3.v_2-x"
    assert safe_filename("a  b") == "a__b"


def test_safe_filename_cuts_to_max_length() -> None:
    assert safe_filename("x" * 300, max_length=120) == "x" * 120
    assert safe_filename("x" * 300) == "x" * 300


def test_a_full_disk_is_named_with_the_file_whatever_the_writer_raised(
    tmp_path, monkeypatch
) -> None:
    """Issue 26: torch.save on a full disk said only 'RuntimeError: [enforce fail at
    inline_container.cc:672] . unexpected pos ...'."""
    import errno
    import shutil
    from collections import namedtuple

    import pytest
    import torch

    from radfusion.utils import atomic_path

    target = tmp_path / "deep" / "checkpoint.pt"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))

    def full_disk_save(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        torch.save({"x": 1}, tmp)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "No space left on device" in str(info.value)
    assert not target.exists() and not list(target.parent.iterdir())  # no partial file
    # with space left, another error stays what it was
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))
    with pytest.raises(RuntimeError, match="unexpected pos"), atomic_path(target) as tmp:
        torch.save({"x": 1}, tmp)
    # an OSError without a file name gets the target's
    with pytest.raises(OSError) as info, atomic_path(target):
        raise OSError(errno.EIO, "Input/output error")
    assert info.value.filename == str(target)


def _cli(*args: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    import radfusion

    # the radfusion this test imported, not another installed copy
    src = str(Path(radfusion.__file__).resolve().parents[1])
    return subprocess.Popen(
        [sys.executable, "-m", "radfusion", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**(env or os.environ), "PYTHONPATH": src},
        **popen,
    )


def test_ctrl_c_says_how_to_resume(tmp_path) -> None:
    """Issue 26: Typer set exit status 130 before radfusion's message could print."""
    out = tmp_path / "cohort"
    # a suite started in the background (`make test &`) hands its children an ignored
    # SIGINT, which Python then leaves ignored: give this child the terminal's default
    proc = _cli(
        "synth",
        "--out",
        str(out),
        "--n",
        "5000",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "images").is_dir() and time.monotonic() < deadline:
            time.sleep(0.1)  # interrupted while writing images
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never left running after a failure
    assert proc.returncode == 130
    assert "interrupted; run the same command again to resume" in stderr
    assert "Traceback" not in stderr


def test_verbose_shows_the_traceback_of_an_unexpected_error(tmp_path) -> None:
    """Issue 26: 'run with -v for details' printed no details with -v."""
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    out = tmp_path / "notes.txt" / "cohort"
    for verbose in ([], ["-v"]):
        proc = _cli(*verbose, "synth", "--out", str(out), "--n", "4")
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 1, stderr
        # one line naming the file and the cause (an OSError from the machine)
        assert f"error: {out / 'images'}: Not a directory" in " ".join(stderr.split())
        assert ("Traceback" in stderr) == bool(verbose), stderr


def test_help_paragraphs_follow_the_terminal_width() -> None:
    """Issue 26: --help kept the docstrings' source line breaks (lines cut mid-sentence)."""
    proc = _cli("validate", "--help", env={**os.environ, "COLUMNS": "120"})
    stdout, _ = proc.communicate(timeout=120)
    sentence = (
        "Exit status 2 when any error is found (each names the case and the problem), or "
        "any warning with --strict."
    )
    assert any(line.strip() == sentence for line in stdout.splitlines()), stdout


def test_a_refused_config_setting_is_an_error_without_traceback(tmp_path) -> None:
    """The label as a ComBat covariate was a warning printed with its source line (issue
    26); it is now refused (issue 20): exit 2, the reason, no traceback."""
    cfg = tmp_path / "study.yaml"
    cfg.write_text("preset: demo\nharmonization:\n  method: combat\n  covariates: [label]\n")
    proc = _cli("config", "check", str(cfg))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert stderr.startswith("error: config file") and "must not contain 'label'" in stderr
    assert "Traceback" not in stderr and "UserWarning" not in stderr


def _tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()
    }


def test_atomic_folder_appears_whole_with_the_umask_mode_and_leaves_no_temporary(
    tmp_path,
) -> None:
    from radfusion.utils import atomic_folder, current_umask

    target = tmp_path / "new" / "out"  # the parent is created
    with atomic_folder(target) as tmp:
        assert tmp.parent == target.parent and not target.exists()
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("a")
    assert _tree(target) == {"sub/a.txt": "a"}
    assert (target.stat().st_mode & 0o777) == 0o777 & ~current_umask()
    assert [p.name for p in target.parent.iterdir()] == ["out"]


def test_atomic_folder_failure_keeps_the_earlier_folder_and_removes_the_temporary(
    tmp_path,
) -> None:
    import pytest

    from radfusion.utils import atomic_folder

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target, ours=lambda _: True) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed while writing")
    assert _tree(target) == {"old.txt": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_folder_replaces_only_a_folder_radfusion_wrote(tmp_path) -> None:
    import pytest

    from radfusion.utils import atomic_folder

    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "mark").write_text("radfusion")
    (ours / "stale.txt").write_text("stale")
    with atomic_folder(ours, ours=lambda f: (f / "mark").is_file(), prefix=".x-") as tmp:
        (tmp / "mark").write_text("new")
    assert _tree(ours) == {"mark": "new"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x-")]  # nor .x-old-

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.docx").write_text("years of work")
    (tmp_path / "file").write_text("a file")
    for ours_check in (lambda f: (f / "mark").is_file(), None):
        with (
            pytest.raises(FileExistsError, match="radfusion did not write it"),
            atomic_folder(theirs, ours=ours_check),
        ):
            raise AssertionError("the block must not run")
    with pytest.raises(FileExistsError), atomic_folder(tmp_path / "file"):
        pass
    assert _tree(theirs) == {"thesis.docx": "years of work"}
    assert (tmp_path / "file").read_text() == "a file"
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_folder(empty) as tmp:  # an empty folder holds nothing to lose
        (tmp / "a").write_text("a")
    assert _tree(empty) == {"a": "a"}


def test_atomic_folder_checks_again_before_replacing(tmp_path) -> None:
    """A folder filled by someone else while radfusion wrote its own is not replaced."""
    import pytest

    from radfusion.utils import atomic_folder

    target = tmp_path / "out"
    with pytest.raises(FileExistsError), atomic_folder(target) as tmp:
        (tmp / "ours.txt").write_text("ours")
        target.mkdir()
        (target / "theirs.txt").write_text("theirs")
    assert _tree(target) == {"theirs.txt": "theirs"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
