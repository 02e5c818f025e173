"""The README's demo Table 2 is a file that `make demo` produces, never a hand copy.

`docs/demo_table2.csv` holds the validation and test rows of the demo's Table 2 (the
columns `radfusion demo` prints); the README shows them between the markers
``<!-- demo-table2:start -->`` and ``<!-- demo-table2:end -->``. After a change that moves
the demo's numbers, run

    make demo && python docs/demo_table.py demo_output

to refresh both; `tests/test_demo_table.py` checks that the README shows the file and
(slow) that a fresh `radfusion demo` reproduces the file exactly (the demo runs in
strict reproducibility mode, so this holds on any x86-64 CPU with AVX2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "demo_table2.csv"
README = ROOT / "README.md"
START, END = "<!-- demo-table2:start -->", "<!-- demo-table2:end -->"
#: The columns the demo prints (radfusion.cli), in its order.
COLUMNS = ["Model", "Set", "AUC (95% CI)", "ACC", "SEN", "SPE"]


def demo_rows(run_dir: Path) -> pd.DataFrame:
    """The printed rows of a run's Table 2: validation and test, the printed columns."""
    df = pd.read_csv(run_dir / "evaluation" / "table2.csv", dtype=str, keep_default_na=False)
    return df[df["Set"].isin(["Validation", "Test"])][COLUMNS].reset_index(drop=True)


def markdown(df: pd.DataFrame) -> str:
    """The rows as the README's Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in df[COLUMNS].itertuples(index=False)]
    return "\n".join(lines)


def readme_block(text: str) -> str:
    """What the README shows between the markers."""
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def main(demo_out: Path) -> None:
    rows = demo_rows(demo_out / "run")
    rows.to_csv(TABLE, index=False)
    text = README.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{START}\n{markdown(rows)}\n{END}{tail}")
    print(f"wrote {TABLE.relative_to(ROOT)} and the README's table ({len(rows)} rows)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_output"))
