"""The README's demo Table 2 is the committed file `docs/demo_table2.csv`, and a fresh
`radfusion demo` reproduces that file exactly (the demo runs in strict reproducibility
mode: the same numbers on any x86-64 CPU with AVX2)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _demo_table():
    spec = importlib.util.spec_from_file_location("demo_table", ROOT / "docs" / "demo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed() -> pd.DataFrame:
    return pd.read_csv(ROOT / "docs" / "demo_table2.csv", dtype=str, keep_default_na=False)


def test_readme_shows_the_committed_demo_table() -> None:
    demo_table = _demo_table()
    readme = (ROOT / "README.md").read_text()
    assert demo_table.readme_block(readme) == demo_table.markdown(_committed())


@pytest.mark.slow
def test_a_fresh_demo_prints_the_committed_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "radfusion", "demo", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = _demo_table().demo_rows(tmp_path / "demo" / "run")
    mode = yaml.safe_load((tmp_path / "demo" / "run" / "config.yaml").read_text())
    assert mode["reproducibility"]["mode"] == "strict"
    pd.testing.assert_frame_equal(got, _committed())
    for row in got.itertuples(index=False):  # ... and printed it
        assert row[0] in proc.stdout and row[2] in proc.stdout
