"""The ``radfusion`` command line.

Every command parses its options into the one :class:`~radfusion.config.StudyConfig`
(from a YAML file or a preset) and calls the library; nothing here computes.
Exit status: 0 success, 1 a failure during work, 2 bad input or configuration.
Every user-supplied string (paths, case ids, config values, error messages) is escaped
before rich prints it, so brackets in them are text, never markup.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from radfusion import __version__
from radfusion.config import PRESETS, StudyConfig, load_preset, preset_text
from radfusion.errors import ConfigError, InputError, ManifestError, RadfusionError

app = typer.Typer(
    name="radfusion",
    help="Radiomics, deep-learning and fusion models for ultrasound lesion classification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # paragraphs of docstrings are re-flowed to the terminal's width (rich mode kept the
    # source's line breaks, breaking lines mid-sentence)
    rich_markup_mode="markdown",
)
config_app = typer.Typer(help="Show and check study configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
#: Options of the whole invocation that :func:`main` needs after a command failed.
_state = {"verbose": False}


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
    return typer.Exit(code)


def _e(value: object) -> str:
    """Text for rich: user values (paths, ids, config values) are never markup."""
    return escape(str(value))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/] {_e(message)}", highlight=False)


def _version(value: bool) -> None:
    if value:
        out.print(f"radfusion {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _state["verbose"] = verbose
    # Python warnings as one plain line each (no source path)
    warnings.showwarning = _show_warning
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # The run folder's log file records INFO; the console shows warnings (-v: everything).
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    for noisy in ("radiomics", "matplotlib", "PIL", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_config(config: Path | None, preset: str | None = None) -> StudyConfig:
    """Read a config file, or a preset when no file is given."""
    try:
        if config is not None:
            return StudyConfig.from_yaml(config)
        return load_preset(preset or "paper")
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None


#: The arguments of this process when it is the ``radfusion`` program (set by :func:`main`);
#: ``None`` when the app is invoked in-process (tests, notebooks), which never restarts.
_ARGV: list[str] | None = None


def _numerics(cfg: StudyConfig) -> None:
    """Put ``reproducibility.mode: strict`` in place before numpy and torch do any work.

    The program restarts itself once with the strict environment (the variables are read
    when the libraries load); in-process callers get the study's own check instead.
    """
    if _ARGV is None:
        return
    from radfusion.reproducibility import restart_with

    try:
        restart_with(cfg.reproducibility, _ARGV)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


# --- config --------------------------------------------------------------------------
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
    try:
        sys.stdout.write(preset_text(preset))
    except ValueError as exc:
        raise _fail(str(exc)) from None


@config_app.command("check")
def config_check(config: Annotated[Path, typer.Argument(help="Study config YAML.")]) -> None:
    """Validate a config file (and the PyRadiomics parameter file it names) and print it
    with every default filled in."""
    from radfusion.radiomics import load_params

    cfg = load_config(config)
    try:
        load_params(cfg.radiomics.params)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    sys.stdout.write(cfg.to_yaml())


# --- validate ------------------------------------------------------------------------
def _print_report(report, drop_note: str | None = None) -> None:
    s = report.summary
    out.print(f"[bold]Cohort[/] {_e(report.manifest)}: {report.n_rows} rows")
    t = Table(title="Data-quality summary", show_header=True, header_style="bold")
    t.add_column("item")
    t.add_column("value", overflow="fold")

    def row(*cells: object) -> None:
        t.add_row(*map(_e, cells))  # cohort values (labels, centres) are user text

    row("cases per label", json.dumps(s.get("cases_per_label", {})))
    if "cases_per_center" in s:
        row("cases per center (label counts)", json.dumps(s["cases_per_center"]))
    if "patients" in s:
        row("patients", str(s["patients"]))
        row("images per patient", json.dumps(s["images_per_patient"]))
    if "groups" in s:
        row(f"groups ({s['group_column']})", str(s["groups"]))
    if "cases_per_split" in s:
        row("cases per split (label counts)", json.dumps(s["cases_per_split"]))
    for dim in ("height", "width"):
        d = s.get(f"image_{dim}", {})
        if d:
            row(f"image {dim} (px)", f"{d['min']:.0f} - {d['max']:.0f} (median {d['median']:.0f})")
    for lab, d in s.get("roi_area_per_label", {}).items():
        row(
            f"ROI area, label {lab} (px)",
            f"median {d['median']:.0f} (Q1 {d['q1']:.0f}, Q3 {d['q3']:.0f}), "
            f"range {d['min']:.0f} - {d['max']:.0f}",
        )
    row("second reader masks", "yes" if s.get("has_reader2") else "no")
    row("exact duplicate sets", str(len(s.get("exact_duplicates", []))))
    row("near-duplicate clusters", str(len(s.get("near_duplicate_clusters", []))))
    row(
        "near-duplicate clusters with mixed labels",
        "; ".join(", ".join(c) for c in s.get("near_duplicate_clusters_mixed_labels", []))
        or "none",
    )
    row(
        "near-duplicate clusters spanning groups",
        str(len(s.get("near_duplicate_clusters_across_groups", []))),
    )
    row("groups straddling the split column", str(len(s.get("groups_straddling_split", {}))))
    out.print(t)
    near = s.get("near_duplicate_clusters", [])
    if near:
        out.print("[bold]near-duplicate clusters[/] (perceptual hash):", highlight=False)
        out.print(escape("  " + "; ".join("+".join(c) for c in near)), highlight=False)
    for i in report.warnings:
        where = f"case {i.case_id}: " if i.case_id else ""
        msg = escape(f"[{i.code}] {where}{i.message}")
        out.print(f"[yellow]warning[/] {msg}", highlight=False)
    for i in report.errors:
        where = f"case {i.case_id}: " if i.case_id else ""
        msg = escape(f"[{i.code}] {where}{i.message}")
        err.print(f"[bold red]error[/] {msg}", highlight=False)
    if drop_note:
        out.print(_e(drop_note), highlight=False)
    verdict = "[green]OK[/]" if report.ok else "[bold red]INVALID[/]"
    out.print(f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")


@app.command()
def validate(
    manifest: Annotated[Path, typer.Argument(help="Cohort manifest CSV.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Study config (clinical columns, mask label...)."),
    ] = None,
    group_column: Annotated[
        str | None, typer.Option(help="Column whose groups must not straddle splits.")
    ] = None,
    numeric: Annotated[
        str | None, typer.Option(help="Comma-separated numeric clinical columns to check.")
    ] = None,
    categorical: Annotated[
        str | None, typer.Option(help="Comma-separated categorical clinical columns.")
    ] = None,
    mask_label: Annotated[
        int | None, typer.Option(help="Mask value of the lesion (default: any non-zero).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    drop_invalid: Annotated[
        bool,
        typer.Option(
            "--drop-invalid", help="Write a cleaned manifest without the invalid rows (listed)."
        ),
    ] = False,
    cleaned: Annotated[
        Path | None,
        typer.Option("--out", help="Cleaned manifest path (default: MANIFEST.clean.csv)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Warnings count as errors (exit status 2).")
    ] = False,
) -> None:
    """Check every row of a cohort manifest and print a data-quality summary.

    Exit status 2 when any error is found (each names the case and the problem), or
    any warning with --strict.
    """
    from radfusion.data import load_cohort
    from radfusion.data.validate import drop_invalid as _drop
    from radfusion.data.validate import validate_cohort

    data = load_config(config).data if config else load_preset("paper").data
    if config is None:
        data.clinical.numeric = []
        data.clinical.categorical = []
    if numeric:
        data.clinical.numeric = [c.strip() for c in numeric.split(",") if c.strip()]
    if categorical:
        data.clinical.categorical = [c.strip() for c in categorical.split(",") if c.strip()]
    if group_column:
        data.group_column = group_column
    if mask_label is not None:
        data.mask_label = mask_label
    try:
        cohort = load_cohort(manifest, data)
    except ManifestError as exc:
        if as_json:
            print(json.dumps({"ok": False, "manifest": str(manifest), "fatal": str(exc)}))
        raise _fail(str(exc)) from None
    report = validate_cohort(cohort)
    note = None
    dropped: dict[str, list[str]] = {}
    target = cleaned or manifest.with_name(manifest.stem + ".clean.csv")
    if drop_invalid and target.resolve() == manifest.resolve():
        raise _fail(f"--out {target} is the manifest itself; choose another file")
    if drop_invalid and report.ok:
        # scripts read the cleaned manifest next: it exists, with every row, and says so
        cohort.to_csv(target)
        note = (
            f"no invalid rows: nothing dropped; manifest ({len(cohort)} rows) written to {target}"
        )
    elif drop_invalid:
        clean, dropped = _drop(cohort, report)
        recheck = validate_cohort(clean)
        lines = [f"dropped {len(dropped)} row(s):"]
        lines += [f"  {cid}: {'; '.join(msgs)}" for cid, msgs in dropped.items()]
        if recheck.ok:
            clean.to_csv(target)
            lines.append(f"cleaned manifest ({len(clean)} rows) written to {target}")
        else:
            lines.append("the remaining rows are still invalid; nothing written")
        note = "\n".join(lines)
        report = recheck if recheck.ok else report
    if as_json:
        d = report.to_dict()
        if drop_invalid:
            d["dropped"] = dropped
        print(json.dumps(d, indent=2, default=str))
    else:
        _print_report(report, note)
    if not report.ok or (strict and report.warnings):
        raise typer.Exit(EXIT_BAD_INPUT)


# --- synthetic cohort -----------------------------------------------------------------
@app.command()
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

    try:
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
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    out.print(f"synthetic cohort: {n} images -> {_e(manifest)}", highlight=False)


# --- the study ----------------------------------------------------------------------
def _stage_printer(stage: str, state: str) -> None:
    colour = {"skipped": "dim", "running": "bold cyan", "done": "green"}[state]
    out.print(f"[{colour}]stage {_e(stage)}: {state}[/]", highlight=False)


def _study(
    cfg: StudyConfig,
    run_dir: Path | None,
    *,
    from_stage: str | None = None,
    only: list[str] | None = None,
    allow_failures: bool = False,
):
    from radfusion.pipeline import run_study

    try:
        return run_study(
            cfg,
            run_dir,
            from_stage=from_stage,
            only=only,
            allow_failures=allow_failures,
            on_stage=_stage_printer,
        )
    except (InputError, ManifestError, ConfigError) as exc:
        raise _fail(str(exc), EXIT_BAD_INPUT) from None
    except RadfusionError as exc:
        raise _fail(str(exc), EXIT_FAILURE) from None


def _print_summary(run_dir: Path) -> None:
    import pandas as pd

    from radfusion.layout import RunLayout

    layout = RunLayout(run_dir)
    table2 = layout.table2
    if table2.is_file():
        df = pd.read_csv(table2, dtype=str, keep_default_na=False)
        df = df[df["Set"].isin(["Validation", "Test"])]
        t = Table(
            title="Table 2 (validation and test; full table in the report)", header_style="bold"
        )
        cols = ["Model", "Set", "AUC (95% CI)", "ACC", "SEN", "SPE"]
        for col in cols:
            t.add_column(col, no_wrap=True)
        for row in df[cols].itertuples(index=False):
            t.add_row(*map(_e, row))
        out.print(t)
    cv = layout.cv_summary
    if cv.is_file():
        df = pd.read_csv(cv)
        t = Table(title="Cross-validated test AUC (selected model per family and fold)")
        for col in ("family", "folds", "fold AUCs", "mean ± SD", "pooled AUC"):
            t.add_column(col)
        for r in df.itertuples(index=False):
            pooled = (
                f"{r.pooled_auc:.3f} (95% CI {r.pooled_ci_low:.3f}–{r.pooled_ci_high:.3f})"
                if r.n_repeats == 1
                else f"{r.pooled_auc:.3f} (range {r.pooled_auc_min:.3f}–{r.pooled_auc_max:.3f})"
            )
            t.add_row(
                _e(r.family),
                str(r.n_folds),
                _e(r.fold_aucs),
                f"{r.mean_auc:.3f} ± {r.sd_auc:.3f}",
                pooled,
            )
        out.print(t)
        for method in df["method"].drop_duplicates():
            out.print(f"pooled AUC: {_e(method)}")
        out.print(f"per-fold runs, reports and bundles: {_e(layout.folds_dir)}")
    report = layout.report
    if report.is_file():
        out.print(f"report: [bold]{_e(report.resolve())}[/]")
    bundle = layout.bundle_dir
    if bundle.is_dir():
        out.print(f"model bundle: [bold]{_e(bundle.resolve())}[/]")


RunDirOpt = Annotated[
    Path | None, typer.Option("--run-dir", "-o", help="Run folder (default: config output_dir).")
]


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Study config YAML (data.manifest set).")],
    run_dir: RunDirOpt = None,
    from_stage: Annotated[
        str | None,
        typer.Option("--from", help="Redo this stage and all later ones (e.g. radiomics)."),
    ] = None,
    allow_failures: Annotated[
        bool, typer.Option(help="Go on when some cases fail radiomics extraction.")
    ] = False,
) -> None:
    """Run the whole study: validate, split, radiomics, 1ch, 2ch, fusion, evaluation,
    report, bundle. Finished stages whose inputs did not change are skipped."""
    cfg = load_config(config)
    _numerics(cfg)
    folder = _study(cfg, run_dir, from_stage=from_stage, allow_failures=allow_failures)
    _print_summary(folder.path)


@app.command()
def radiomics(
    config: Annotated[Path, typer.Argument(help="Study config YAML.")],
    run_dir: RunDirOpt = None,
    allow_failures: Annotated[
        bool, typer.Option(help="Go on when some cases fail extraction (they are listed).")
    ] = False,
) -> None:
    """Radiomics arm: PyRadiomics extraction, ICC/Spearman/LASSO selection, classifier zoo."""
    cfg = load_config(config)
    _numerics(cfg)
    folder = _study(cfg, run_dir, only=["radiomics"], allow_failures=allow_failures)
    out.print(
        f"radiomics arm written under {_e(folder.layout.radiomics_dir)} and "
        f"{_e(folder.layout.family_dir('radiomics'))}"
    )


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


@app.command()
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
                raise _fail(
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
            _e(r.feature),
            _e(r.ibsi_tag),
            _num(r.reference),
            _num(r.tolerance),
            _num(r.radfusion),
            _num(r.difference),
            f"[{style}]{_e(r.status)}[/]",
        )
    out.print(t)
    dev = table[table["status"] == "documented deviation"]
    for r in dev.drop_duplicates("pyradiomics_feature").itertuples(index=False):
        out.print(f"[cyan]deviation[/] {_e(r.pyradiomics_feature)}: {_e(r.note)}", highlight=False)
    for r in setting_deviations().itertuples(index=False):
        if r.in_this_check.startswith("checked per feature"):
            continue  # printed above with the feature
        out.print(f"[dim]setting[/] {_e(r.deviation)}: {_e(r.in_this_check)}", highlight=False)
    missing = table[table["status"] == "not computed"]
    if not show_all and len(missing):
        per_family = missing.groupby("family", sort=False).size()
        out.print(
            "not computed by PyRadiomics (--all lists them): "
            + _e(", ".join(f"{f} {n}" for f, n in per_family.items())),
            highlight=False,
        )
    if check.unmapped:
        err.print(
            "[bold red]unmapped PyRadiomics features[/] (add them to pyradiomics_ibsi_map.csv): "
            + _e(", ".join(check.unmapped)),
            highlight=False,
        )
    if out_csv is not None:
        write_ibsi(check, out_csv, out_csv.with_suffix(".json"))
        out.print(
            f"table written to {_e(out_csv)} (summary: {_e(out_csv.with_suffix('.json'))})",
            highlight=False,
        )
    verdict = "[green]OK[/]" if check.ok else "[bold red]FAILED[/]"
    out.print(f"{verdict}: {_e(check.summary_line())}", highlight=False)
    if not check.ok:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def deep(
    config: Annotated[Path, typer.Argument(help="Study config YAML.")],
    arm: Annotated[str, typer.Option(help="1ch (image) or 2ch (image + ROI).")] = "2ch",
    run_dir: RunDirOpt = None,
) -> None:
    """Deep-learning arm: train a ResNet end to end, extract its deep features."""
    if arm not in ("1ch", "2ch"):
        raise _fail(f"--arm must be 1ch or 2ch, not {arm!r}")
    cfg = load_config(config)
    _numerics(cfg)
    if arm not in cfg.deep.arms:
        cfg.deep.arms = [*cfg.deep.arms, arm]
    folder = _study(cfg, run_dir, only=[f"deep_{arm}"])
    out.print(f"{arm} arm written under {_e(folder.layout.deep_dir(arm))}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    pdf: Annotated[
        bool,
        typer.Option("--pdf", help="Also print it to report/report.pdf (needs Chromium)."),
    ] = False,
    paper: Annotated[
        str, typer.Option("--paper", help="PDF page size: A4 or Letter.", show_default=True)
    ] = "A4",
) -> None:
    """(Re)write the self-contained HTML report of a run (evaluating it first if needed)."""
    from radfusion.layout import RunLayout
    from radfusion.pipeline.run import RunFolder
    from radfusion.pipeline.study import STAGES, evaluate
    from radfusion.report import write_report

    layout = RunLayout(run_dir)
    if not layout.config.is_file() or not layout.stages_dir.is_dir():
        raise _fail(f"{run_dir} is not a radfusion run folder (config.yaml or stages/ missing)")
    cfg = load_config(layout.config)
    folder = RunFolder(run_dir, cfg)
    from radfusion.report.html import PRINT_PAGE_SIZES
    from radfusion.report.pdf import find_chromium, write_pdf

    if paper not in PRINT_PAGE_SIZES:
        raise _fail(f"--paper must be one of {', '.join(PRINT_PAGE_SIZES)}, not {paper}")
    if pdf and find_chromium() is None:  # checked first: fail before the (long) report
        raise _fail(
            "--pdf needs Chromium to print the report; install it (Debian/Ubuntu: "
            "apt-get install chromium) or open report.html in a browser and print to PDF"
        )
    try:
        folder.lock()  # a run writing the folder now would change what is reported
        for stage in STAGES:
            damaged = folder.damaged_outputs(stage)
            if damaged:
                raise _fail(
                    f"{run_dir / damaged[0]} is missing, truncated or modified; redo it with "
                    f"`radfusion run CONFIG --run-dir {run_dir} --from {stage}`"
                )
        if not layout.metrics.is_file():
            evaluate(folder)
        path = write_report(run_dir)
        pdf_path = write_pdf(path, layout.report_pdf, paper) if pdf else None
    except (InputError, ManifestError, ConfigError) as exc:
        raise _fail(str(exc)) from None
    except RadfusionError as exc:
        raise _fail(str(exc), EXIT_FAILURE) from None
    finally:
        folder.unlock()
    out.print(f"report: [bold]{_e(path.resolve())}[/]")
    if pdf_path is not None:
        out.print(f"PDF: [bold]{_e(pdf_path.resolve())}[/]")


def _parse_clinical(items: list[str] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise _fail(f"--clinical expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        values[k.strip()] = v.strip()
    return values


TrustedKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--trusted-key",
        help="Key file you trust (shared secret or Ed25519 public key): the bundle must "
        "carry a signature made with it.",
    ),
]


def _case_errors(exc) -> typer.Exit:
    """Print each case that failed the checks (``InvalidCasesError``); exit status 2."""
    for code, cid, msg in exc.issues:
        where = f"case {cid}: " if cid else ""
        err.print(f"[bold red]error[/] {_e(f'[{code}] {where}{msg}')}", highlight=False)
    return typer.Exit(EXIT_BAD_INPUT)


def _warning_line(code: str, message: str, case_id: str | None) -> str:
    where = f"case {case_id}: " if case_id else ""
    return f"[yellow]warning[/] {_e(f'[{code}] {where}{message}')}"


@app.command()
def predict(
    bundle: Annotated[Path, typer.Argument(help="Model bundle folder (RUN/bundle).")],
    image: Annotated[Path | None, typer.Option(help="Ultrasound image of the new case.")] = None,
    mask: Annotated[Path | None, typer.Option(help="Its lesion ROI (mask or ImageJ .roi).")] = None,
    clinical: Annotated[
        list[str] | None,
        typer.Option(help="Clinical value key=value (repeat), e.g. --clinical age=61."),
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Score a batch: a manifest CSV (label not needed).")
    ] = None,
    case_id: Annotated[str, typer.Option(help="Name of the single case.")] = "new_case",
    center: Annotated[
        str | None,
        typer.Option(help="Centre of the single case (for a study with ComBat harmonisation)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Refuse to score when any case has a warning (exit 2)."),
    ] = False,
    trusted_key: TrustedKeyOpt = None,
) -> None:
    """Score new patients with every model of a study's bundle.

    Each case gets the checks of `radfusion validate` first: errors stop (exit 2),
    warnings are shown with the scores (and under "warnings" in --json).
    """
    import pandas as pd

    from radfusion.bundle import BundleError, load_bundle
    from radfusion.data import load_cohort
    from radfusion.families import FAMILIES
    from radfusion.predict import (
        InvalidCasesError,
        check_new_cases,
        payload_records,
        predict_records,
        single_case_cohort,
    )

    if manifest is not None:
        single = {"--image": image, "--mask": mask, "--clinical": clinical, "--center": center}
        given = [name for name, value in single.items() if value]
        if given:
            raise _fail(
                f"{', '.join(given)} describe(s) one case, but --manifest scores the cases of "
                "its rows; give either --manifest or --image and --mask"
            )
    try:
        b = load_bundle(bundle, trusted_key=trusted_key)
    except BundleError as exc:
        raise _fail(str(exc)) from None
    try:
        if manifest is not None:
            cohort = load_cohort(manifest, b.config.data, require_labels=False)
        elif image is not None and mask is not None:
            cohort = single_case_cohort(
                b,
                image=image,
                mask=mask,
                clinical=_parse_clinical(clinical),
                case_id=case_id,
                center=center,
            )
        else:
            raise _fail("give --image and --mask, or --manifest")
    except (ManifestError, InputError) as exc:
        raise _fail(str(exc)) from None
    if strict:
        rep = check_new_cases(b, cohort)
        if rep.ok and rep.warnings:
            for w in rep.warnings:
                err.print(_warning_line(w.code, w.message, w.case_id), highlight=False)
            raise _fail(f"{len(rep.warnings)} warning(s) and --strict: nothing scored")
    try:
        with warnings.catch_warnings():
            # said once, per case, as the unseen_category warning
            warnings.filterwarnings("ignore", message="Found unknown categories")
            payload = predict_records(b, cohort)
    except InvalidCasesError as exc:
        raise _case_errors(exc) from None
    except RadfusionError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        print(json.dumps(payload, indent=2))
        return
    preds = pd.DataFrame(payload_records(payload))
    negative, positive = b.config.evaluation.class_names
    per_case = {c["case_id"]: c["warnings"] for c in payload["cases"] if c["warnings"]}
    several = preds["case_id"].nunique() > 1
    title = "radfusion predictions" + ("" if several else f" for {preds['case_id'].iloc[0]}")
    t = Table(title=_e(f"{title} (study: {b.meta.get('study')})"), header_style="bold")
    # The scores never shrink: names and warning codes wrap instead (a narrow terminal
    # once showed "0.…" for P). One case's warnings are printed in full below the table;
    # with several cases, a column names each case's warning codes.
    several_warned = several and bool(per_case)
    for col in ["case"] if several else []:
        t.add_column(col, overflow="fold")
    t.add_column("model", overflow="fold")
    t.add_column("family", overflow="fold")
    for col in (f"P({positive})", "threshold", "class"):
        t.add_column(_e(col), no_wrap=True, min_width=len(col))
    if several_warned:
        t.add_column("warnings", overflow="fold")
    order = {f: i for i, f in enumerate(FAMILIES)}
    preds = preds.assign(_o=preds["family"].map(order), _s=~preds["selected"])
    preds = preds.sort_values(["case_id", "_o", "_s"], kind="stable").drop(columns=["_o", "_s"])
    for r in preds.itertuples(index=False):
        row = [
            r.model + (" *" if r.selected else ""),
            r.family,
            f"{r.probability:.3f}",
            f"{r.threshold:.3g}" if r.threshold < 0.001 else f"{r.threshold:.3f}",
            positive if r.predicted_class else negative,
        ]
        if several_warned:
            row.append(", ".join(w["code"] for w in per_case.get(r.case_id, [])))
        t.add_row(*map(_e, [*([r.case_id] if several else []), *row]))
    out.print(t)
    out.print("* the study's chosen model of each family")
    if payload.get("recalibration"):
        out.print(f"[yellow]note[/] {_e(payload['recalibration'])}", highlight=False)
    for w in payload["warnings"]:
        out.print(_warning_line(w["code"], w["message"], None), highlight=False)
    for case in payload["cases"]:
        for w in case["warnings"]:
            out.print(_warning_line(w["code"], w["message"], case["case_id"]), highlight=False)


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Model bundle folder (RUN/bundle).")],
    manifest: Annotated[
        Path, typer.Argument(help="External cohort manifest CSV (label required; center optional).")
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Output folder (new, empty, or an earlier evaluate's).")
    ] = Path("external_validation"),
    recalibrate: Annotated[
        str | None,
        typer.Option(
            "--recalibrate",
            help="Also write a recalibrated new bundle version (OUT/bundle_recalibrated): "
            "'intercept' or 'logistic' (intercept and slope).",
        ),
    ] = None,
    save_harmonised: Annotated[
        bool,
        typer.Option(
            "--save-harmonised",
            help="ComBat bundle: also write a new bundle version whose ComBat knows the "
            "external centres (OUT/bundle_harmonised).",
        ),
    ] = False,
    min_centre_cases: Annotated[
        int,
        typer.Option(
            min=2, help="ComBat bundle: fewest cases of an external centre to harmonise it."
        ),
    ] = 10,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Refuse to score when any case has a warning (exit 2)."),
    ] = False,
    trusted_key: Annotated[
        Path | None,
        typer.Option("--trusted-key", help="The bundle must carry a signature made with this key."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap intervals.")] = 0,
) -> None:
    """Validate a saved bundle on another centre's labelled cases (external validation).

    Every model scores the cases as `radfusion predict` does, at the threshold frozen in
    the bundle; the report, tables and figures go to --out.
    """
    from radfusion.bundle import BundleError
    from radfusion.external import evaluate_external
    from radfusion.predict import InvalidCasesError

    def step(message: str) -> None:
        out.print(f"[bold cyan]evaluate[/] {_e(message)}", highlight=False)

    try:
        with out.status("external validation", spinner="dots"):
            result = evaluate_external(
                bundle,
                manifest,
                out_dir,
                recalibrate=recalibrate,
                save_harmonised=save_harmonised,
                min_centre_cases=min_centre_cases,
                strict=strict,
                trusted_key=trusted_key,
                seed=seed,
                on_step=step,
            )
    except InvalidCasesError as exc:
        raise _case_errors(exc) from None
    except (BundleError, InputError, ManifestError, ConfigError) as exc:
        raise _fail(str(exc)) from None
    except RadfusionError as exc:
        raise _fail(str(exc), EXIT_FAILURE) from None
    for note in result.notes:
        out.print(f"[yellow]note[/] {_e(note)}", highlight=False)
    t = Table(title="External validation (frozen thresholds)", header_style="bold")
    for col in ("model", "n", "AUC (95% CI)", "SEN", "SPE", "cal. slope", "development AUC"):
        t.add_column(col, no_wrap=True)
    comp = result.comparison.set_index("model")
    for r in result.metrics.itertuples(index=False):
        internal = comp.loc[r.model, "internal_auc"]
        t.add_row(
            _e(r.model + (" *" if r.selected else "")),
            str(r.n),
            f"{r.auc:.3f} ({r.auc_low:.3f}–{r.auc_high:.3f})",
            f"{r.sen:.3f}",
            f"{r.spe:.3f}",
            f"{r.slope:.2f}",
            f"{internal:.3f}",
        )
    out.print(t)
    if result.harmonised is not None:
        t = Table(title="With the new centre(s) harmonised (ComBat)", header_style="bold")
        for col in ("model", "AUC frozen", "AUC harmonised", "DeLong p"):
            t.add_column(col, no_wrap=True)
        for r in result.harmonised.itertuples(index=False):
            t.add_row(
                _e(r.model + (" *" if r.selected else "")),
                f"{r.auc_frozen:.3f}",
                f"{r.auc_harmonised:.3f}",
                "" if r.delong_p != r.delong_p else f"{r.delong_p:.3f}",
            )
        out.print(t)
    out.print(f"report: [bold]{_e(result.report.resolve())}[/]")
    for what, path in (
        ("recalibrated bundle", result.recalibrated_bundle),
        ("harmonised bundle", result.harmonised_bundle),
    ):
        if path is not None:
            out.print(f"{what}: [bold]{_e(path.resolve())}[/]")


@app.command()
def sign(
    bundle: Annotated[Path, typer.Argument(help="Model bundle folder to sign.")],
    key: Annotated[
        Path,
        typer.Option(
            "--key", help="Shared-secret file (HMAC-SHA256) or Ed25519 private key (PEM)."
        ),
    ],
) -> None:
    """Sign a bundle's bundle.json so that recipients can check it with --trusted-key."""
    from radfusion.bundle import BundleError, load_bundle
    from radfusion.signing import SignatureError, sign_bundle

    try:
        load_bundle(bundle)  # sign only what verifies now
        path = sign_bundle(bundle, key)
    except (BundleError, SignatureError) as exc:
        raise _fail(str(exc)) from None
    out.print(f"signature written to {_e(path)}", highlight=False)


# --- serve ---------------------------------------------------------------------------
@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="Model bundle folder (RUN/bundle).")],
    host: Annotated[
        str, typer.Option(help="Address to listen on; other than 127.0.0.1 needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(help="Access token (generated and printed when --host is not local)."),
    ] = None,
    keep_uploads: Annotated[
        Path | None,
        typer.Option(help="Also save every uploaded image and ROI in this folder."),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.1, help="Largest upload per request, in MB.")
    ] = 25,
    workers: Annotated[int, typer.Option(min=1, help="Predictions computed at once.")] = 2,
    trusted_key: TrustedKeyOpt = None,
) -> None:
    """Open a local web page where a clinician scores a new patient with a study's bundle."""
    from radfusion.bundle import BundleError, bundle_sha256, load_bundle
    from radfusion.serve.app import (
        ServeSettings,
        generated_token,
        is_loopback,
        run_server,
    )
    from radfusion.serve.uploads import Limits

    try:
        # hashes (and signature) now; the model files' formats with the background loading
        b = load_bundle(bundle, trusted_key=trusted_key, check_formats=False)
    except BundleError as exc:
        raise _fail(str(exc)) from None
    if token is None and not is_loopback(host):
        token = generated_token()
    settings = ServeSettings(
        token=token,
        limits=Limits(max_bytes=int(max_upload_mb * 1024 * 1024)),
        keep_uploads=keep_uploads,
        workers=workers,
    )
    shown = host if ":" not in host else f"[{host}]"
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    signed = f", signature checked with {trusted_key}" if trusted_key is not None else ""
    out.print(_e(f"bundle {bundle} verified (sha256 {bundle_sha256(b)[:12]}{signed})"))
    out.print(f"radfusion serve: open [bold]{escape(url)}[/]  (Ctrl+C stops)", highlight=False)
    if keep_uploads is not None:
        out.print(f"uploads are kept in {escape(str(keep_uploads))}")
    run_server(b, host=host, port=port, settings=settings)


# --- demo ----------------------------------------------------------------------------
@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Demo output folder.")] = Path(
        "demo_output"
    ),
    n: Annotated[int, typer.Option("--n", help="Synthetic cohort size.")] = 300,
    prevalence: Annotated[
        float,
        typer.Option(
            help="APT/PC fraction of the demo cohort (higher than the paper's 6.6% so a small "
            "demo has enough positives in every split)."
        ),
    ] = 0.2,
    reader2_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Fraction of images also outlined by a second reader, for the ICC filter "
            "(like the paper's 100 re-annotated images).",
        ),
    ] = 0.33,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    reproducibility: Annotated[
        str,
        typer.Option(
            help="strict: the README's Table 2 on any x86-64 CPU with AVX2; fast: this "
            "CPU's fastest kernels (identical on this machine only)."
        ),
    ] = "strict",
) -> None:
    """Synthesise the built-in parathyroid cohort and run the full study on it with the
    `demo` preset (the README's main job)."""
    if reproducibility not in ("strict", "fast"):
        raise _fail(f"--reproducibility must be strict or fast, not {reproducibility!r}")
    from radfusion.synth import generate_cohort

    cfg = load_preset("demo")
    # set up before the cohort is drawn: numpy's kernels count there too
    cfg.reproducibility.mode = reproducibility  # type: ignore[assignment]
    _numerics(cfg)

    cohort_dir = out_dir / "cohort"
    manifest = cohort_dir / "manifest.csv"
    if not manifest.is_file():
        out.print(f"synthesising {n} images into {_e(cohort_dir)}", highlight=False)
        try:
            # every core: the files do not depend on the number of processes
            generate_cohort(
                cohort_dir,
                n=n,
                seed=seed,
                prevalence=prevalence,
                reader2_fraction=reader2_fraction,
                n_jobs=-1,
            )
        except ConfigError as exc:
            raise _fail(str(exc)) from None
    else:
        out.print(f"reusing synthetic cohort {_e(manifest)}", highlight=False)
    cfg.data.manifest = manifest.resolve()
    cfg.output_dir = out_dir / "run"
    folder = _study(cfg, cfg.output_dir)
    _print_summary(folder.path)


def main() -> None:  # pragma: no cover - console entry for `python -m radfusion`
    global _ARGV
    _ARGV = sys.argv[1:]
    try:
        app()
    except SystemExit as exc:
        # Typer turns Ctrl+C into exit status 130 before any handler here could see it
        if exc.code == EXIT_INTERRUPTED:
            err.print("interrupted; run the same command again to resume")
        raise
    except (InputError, ManifestError, ConfigError) as exc:
        err.print(f"[bold red]error:[/] {_e(exc)}", highlight=False)
        sys.exit(EXIT_BAD_INPUT)
    except RadfusionError as exc:
        err.print(f"[bold red]error:[/] {_e(exc)}", highlight=False)
        sys.exit(EXIT_FAILURE)
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume")
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:  # the machine: disk full, permissions, a vanished folder
        if _state["verbose"]:
            err.print_exception()
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"[bold red]error:[/] {_e(where)}{_e(exc.strerror or exc)}", highlight=False)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # a bug or the machine (disk full ...): one line, no traceback
        if _state["verbose"]:  # ... unless asked for with -v
            err.print_exception()
        err.print(
            f"[bold red]error:[/] {_e(type(exc).__name__)}: {_e(exc)} "
            "(run with -v for details; please report it if it is not about your machine)",
            highlight=False,
        )
        sys.exit(EXIT_FAILURE)
