"""Commands around a study: ``radfusion config`` (show and check configurations),
``synth`` (the built-in synthetic cohort) and ``ibsi`` (the radiomics conformance check)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from radfusion.cli.common import EXIT_FAILURE, err, esc, exit_on, fail, load_config, out
from radfusion.config import PRESETS, preset_text
from radfusion.errors import ConfigError

config_app = typer.Typer(help="Show and check study configurations.", no_args_is_help=True)


@config_app.command("env")
def config_env(
    config: Annotated[
        Path | None, typer.Argument(help="Study config YAML (default: the demo preset).")
    ] = None,
) -> None:
    """Print the environment of reproducibility.mode strict as shell `export` lines, for
    running a strict study from Python: `eval "$(radfusion config env study.yaml)"`."""
    import shlex

    from radfusion.reproducibility import strict_environment

    cfg = load_config(config, "demo")
    for key, value in strict_environment(cfg.reproducibility.threads).items():
        sys.stdout.write(f"export {key}={shlex.quote(value)}\n")


@config_app.command("show")
def config_show(
    preset: Annotated[str, typer.Argument(help=f"Preset name: {', '.join(PRESETS)}.")],
) -> None:
    """Print a preset as YAML, to start your own study config from it."""
    with exit_on((ValueError,)):
        sys.stdout.write(preset_text(preset))


@config_app.command("check")
def config_check(config: Annotated[Path, typer.Argument(help="Study config YAML.")]) -> None:
    """Validate a config file (and the PyRadiomics parameter file it names) and print it
    with every default filled in."""
    from radfusion.radiomics import load_params

    cfg = load_config(config)
    with exit_on((ConfigError,)):
        load_params(cfg.radiomics.params)
    sys.stdout.write(cfg.to_yaml())


def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the cohort into.")],
    n: Annotated[int, typer.Option("--n", min=4, help="Number of images.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    prevalence: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction of APT/PC (paper: 0.066).")
    ] = 0.066,
    difficulty: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="0 easy ... 1 nearly indistinguishable.")
    ] = 0.5,
    centers: Annotated[int, typer.Option(min=1, help="Number of hospitals.")] = 2,
    scanner_effect: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Extra per-centre scanner differences (gain, speckle, resolution): 0 none, "
            "~1 strong enough that harmonisation matters.",
        ),
    ] = 0.0,
    reader2_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Fraction of images, drawn at random, also outlined by a second reader "
            "(for the ICC; the paper re-annotated 100 random images).",
        ),
    ] = 1.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a synthetic cohort already in --out.")
    ] = False,
) -> None:
    """Write the built-in synthetic parathyroid ultrasound cohort (images, 2 readers' ROIs,
    clinical sheet) and its manifest. A folder holding any file it would write is refused
    (unless --overwrite)."""
    from radfusion.synth import generate_cohort

    with exit_on((ConfigError,)):
        manifest = generate_cohort(
            out_dir,
            n=n,
            seed=seed,
            prevalence=prevalence,
            difficulty=difficulty,
            n_centers=centers,
            scanner_effect=scanner_effect,
            reader2_fraction=reader2_fraction,
            overwrite=overwrite,
        )
    out.print(f"synthetic cohort: {n} images -> {esc(manifest)}", highlight=False)


_STATUS_STYLE = {
    "pass": "green",
    "documented deviation": "cyan",
    "fail": "bold red",
    "not computed": "dim",
    "no reference": "dim",
}


def _num(x: float) -> str:
    return "" if x != x else f"{x:.4g}"  # NaN -> blank


def _is_ibsi_output(path: Path, columns: tuple[str, ...]) -> bool:
    """Whether ``path`` is a table or summary an earlier `radfusion ibsi --out` wrote."""
    try:
        if path.suffix == ".json":
            return {"line", "counts"} <= set(json.loads(path.read_text()))
        with path.open(encoding="utf-8", errors="replace") as fh:
            return fh.readline().rstrip("\n") == ",".join(columns)
    except (OSError, ValueError, TypeError):
        return False


def ibsi(
    out_csv: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Also write the table to this CSV file (and its summary beside it)."
        ),
    ] = None,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all", help="List every IBSI reference value, also those PyRadiomics lacks."
        ),
    ] = False,
) -> None:
    """Check radfusion's radiomics against the IBSI 1 digital phantom: one row per IBSI
    reference value (exit 1 when a mapped feature leaves its tolerance)."""
    from radfusion.radiomics.ibsi import TABLE_COLUMNS, ibsi_check, setting_deviations, write_ibsi

    if out_csv is not None:
        for existing in (out_csv, out_csv.with_suffix(".json")):
            if existing.exists() and not _is_ibsi_output(existing, TABLE_COLUMNS):
                raise fail(
                    f"{existing} exists and is not a radfusion IBSI table; choose another --out"
                )
    check = ibsi_check()
    table = check.table
    shown = (
        table if show_all else table[table["status"].isin(["pass", "documented deviation", "fail"])]
    )
    t = Table(
        title="IBSI 1 digital phantom (reference values from Zwanenburg et al., Radiology 2020)",
        header_style="bold",
    )
    t.add_column("Feature", overflow="fold", min_width=12)
    t.add_column("IBSI tag", no_wrap=True)
    for col in ("Reference", "Tolerance", "radfusion", "Difference"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("Status", no_wrap=True)
    for r in shown.itertuples(index=False):
        style = _STATUS_STYLE.get(r.status, "")
        t.add_row(
            esc(r.feature),
            esc(r.ibsi_tag),
            _num(r.reference),
            _num(r.tolerance),
            _num(r.radfusion),
            _num(r.difference),
            f"[{style}]{esc(r.status)}[/]",
        )
    out.print(t)
    dev = table[table["status"] == "documented deviation"]
    for r in dev.drop_duplicates("pyradiomics_feature").itertuples(index=False):
        line = f"[cyan]deviation[/] {esc(r.pyradiomics_feature)}: {esc(r.note)}"
        out.print(line, highlight=False)
    for r in setting_deviations().itertuples(index=False):
        if r.in_this_check.startswith("checked per feature"):
            continue  # printed above with the feature
        out.print(f"[dim]setting[/] {esc(r.deviation)}: {esc(r.in_this_check)}", highlight=False)
    missing = table[table["status"] == "not computed"]
    if not show_all and len(missing):
        per_family = missing.groupby("family", sort=False).size()
        out.print(
            "not computed by PyRadiomics (--all lists them): "
            + esc(", ".join(f"{f} {n}" for f, n in per_family.items())),
            highlight=False,
        )
    if check.unmapped:
        err.print(
            "[bold red]unmapped PyRadiomics features[/] (add them to pyradiomics_ibsi_map.csv): "
            + esc(", ".join(check.unmapped)),
            highlight=False,
        )
    if out_csv is not None:
        write_ibsi(check, out_csv, out_csv.with_suffix(".json"))
        out.print(
            f"table written to {esc(out_csv)} (summary: {esc(out_csv.with_suffix('.json'))})",
            highlight=False,
        )
    verdict = "[green]OK[/]" if check.ok else "[bold red]FAILED[/]"
    out.print(f"{verdict}: {esc(check.summary_line())}", highlight=False)
    if not check.ok:
        raise typer.Exit(EXIT_FAILURE)
