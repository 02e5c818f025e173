"""The README's Python API example runs as written (a stale example is a bug)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_api_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example writes ./cohort
    exec(compile(_python_api_example(), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert re.fullmatch(r"AUC 0\.\d{3} vs 0\.\d{3}, p = [01]\.\d{3}\n", out), out
    assert (tmp_path / "cohort" / "manifest.csv").is_file()
