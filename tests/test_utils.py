"""Small shared helpers."""

from __future__ import annotations

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
