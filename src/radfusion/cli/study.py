"""The study commands: ``validate`` a cohort, ``run`` the study (or one arm of it:
``radiomics``, ``deep``) and ``demo`` (the synthetic cohort's whole study)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from radfusion.cli.common import (
    BAD_INPUT,
    EXIT_BAD_INPUT,
    err,
    esc,
    exit_on,
    fail,
    load_config,
    numerics,
    out,
)
from radfusion.config import StudyConfig, load_preset
from radfusion.errors import ConfigError, ManifestError, RadfusionError


def _print_report(report, drop_note: str | None = None) -> None:
    s = report.summary
    out.print(f"[bold]Cohort[/] {esc(report.manifest)}: {report.n_rows} rows")
    t = Table(title="Data-quality summary", show_header=True, header_style="bold")
    t.add_column("item")
    t.add_column("value", overflow="fold")

    def row(*cells: object) -> None:
        t.add_row(*map(esc, cells))  # cohort values (labels, centres) are user text

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
        out.print(esc(drop_note), highlight=False)
    verdict = "[green]OK[/]" if report.ok else "[bold red]INVALID[/]"
    out.print(f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")


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
        raise fail(str(exc)) from None
    report = validate_cohort(cohort)
    note = None
    dropped: dict[str, list[str]] = {}
    target = cleaned or manifest.with_name(manifest.stem + ".clean.csv")
    if drop_invalid and target.resolve() == manifest.resolve():
        raise fail(f"--out {target} is the manifest itself; choose another file")
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


def _stage_printer(stage: str, state: str) -> None:
    colour = {"skipped": "dim", "running": "bold cyan", "done": "green"}[state]
    out.print(f"[{colour}]stage {esc(stage)}: {state}[/]", highlight=False)


def _study(
    cfg: StudyConfig,
    run_dir: Path | None,
    *,
    from_stage: str | None = None,
    only: list[str] | None = None,
    allow_failures: bool = False,
):
    from radfusion.pipeline import run_study

    with exit_on(BAD_INPUT, failure=(RadfusionError,)):
        return run_study(
            cfg,
            run_dir,
            from_stage=from_stage,
            only=only,
            allow_failures=allow_failures,
            on_stage=_stage_printer,
        )


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
            t.add_row(*map(esc, row))
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
                esc(r.family),
                str(r.n_folds),
                esc(r.fold_aucs),
                f"{r.mean_auc:.3f} ± {r.sd_auc:.3f}",
                pooled,
            )
        out.print(t)
        for method in df["method"].drop_duplicates():
            out.print(f"pooled AUC: {esc(method)}")
        out.print(f"per-fold runs, reports and bundles: {esc(layout.folds_dir)}")
    report = layout.report
    if report.is_file():
        out.print(f"report: [bold]{esc(report.resolve())}[/]")
    bundle = layout.bundle_dir
    if bundle.is_dir():
        out.print(f"model bundle: [bold]{esc(bundle.resolve())}[/]")


RunDirOpt = Annotated[
    Path | None, typer.Option("--run-dir", "-o", help="Run folder (default: config output_dir).")
]


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
    numerics(cfg)
    folder = _study(cfg, run_dir, from_stage=from_stage, allow_failures=allow_failures)
    _print_summary(folder.path)


def radiomics(
    config: Annotated[Path, typer.Argument(help="Study config YAML.")],
    run_dir: RunDirOpt = None,
    allow_failures: Annotated[
        bool, typer.Option(help="Go on when some cases fail extraction (they are listed).")
    ] = False,
) -> None:
    """Radiomics arm: PyRadiomics extraction, ICC/Spearman/LASSO selection, classifier zoo."""
    cfg = load_config(config)
    numerics(cfg)
    folder = _study(cfg, run_dir, only=["radiomics"], allow_failures=allow_failures)
    out.print(
        f"radiomics arm written under {esc(folder.layout.radiomics_dir)} and "
        f"{esc(folder.layout.family_dir('radiomics'))}"
    )


def deep(
    config: Annotated[Path, typer.Argument(help="Study config YAML.")],
    arm: Annotated[str, typer.Option(help="1ch (image) or 2ch (image + ROI).")] = "2ch",
    run_dir: RunDirOpt = None,
) -> None:
    """Deep-learning arm: train a ResNet end to end, extract its deep features."""
    if arm not in ("1ch", "2ch"):
        raise fail(f"--arm must be 1ch or 2ch, not {arm!r}")
    cfg = load_config(config)
    numerics(cfg)
    if arm not in cfg.deep.arms:
        cfg.deep.arms = [*cfg.deep.arms, arm]
    folder = _study(cfg, run_dir, only=[f"deep_{arm}"])
    out.print(f"{arm} arm written under {esc(folder.layout.deep_dir(arm))}")


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
        raise fail(f"--reproducibility must be strict or fast, not {reproducibility!r}")
    from radfusion.synth import generate_cohort

    cfg = load_preset("demo")
    # set up before the cohort is drawn: numpy's kernels count there too
    cfg.reproducibility.mode = reproducibility  # type: ignore[assignment]
    numerics(cfg)

    cohort_dir = out_dir / "cohort"
    manifest = cohort_dir / "manifest.csv"
    if not manifest.is_file():
        out.print(f"synthesising {n} images into {esc(cohort_dir)}", highlight=False)
        # every core: the files do not depend on the number of processes
        with exit_on((ConfigError,)):
            generate_cohort(
                cohort_dir,
                n=n,
                seed=seed,
                prevalence=prevalence,
                reader2_fraction=reader2_fraction,
                n_jobs=-1,
            )
    else:
        out.print(f"reusing synthetic cohort {esc(manifest)}", highlight=False)
    cfg.data.manifest = manifest.resolve()
    cfg.output_dir = out_dir / "run"
    folder = _study(cfg, cfg.output_dir)
    _print_summary(folder.path)
