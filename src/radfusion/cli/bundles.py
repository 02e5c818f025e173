"""The commands of a saved model bundle: ``predict`` (score new patients), ``evaluate``
(external validation) and ``sign``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from radfusion.cli.common import (
    BAD_INPUT,
    TrustedKeyOpt,
    err,
    esc,
    exit_on,
    fail,
    out,
)
from radfusion.errors import InputError, ManifestError, RadfusionError


def _parse_clinical(items: list[str] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise fail(f"--clinical expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        values[k.strip()] = v.strip()
    return values


def _warning_line(code: str, message: str, case_id: str | None) -> str:
    where = f"case {case_id}: " if case_id else ""
    return f"[yellow]warning[/] {esc(f'[{code}] {where}{message}')}"


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
            raise fail(
                f"{', '.join(given)} describe(s) one case, but --manifest scores the cases of "
                "its rows; give either --manifest or --image and --mask"
            )
    with exit_on((BundleError,)):
        b = load_bundle(bundle, trusted_key=trusted_key)
    with exit_on((ManifestError, InputError)):
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
            raise fail("give --image and --mask, or --manifest")
    if strict:
        rep = check_new_cases(b, cohort)
        if rep.ok and rep.warnings:
            for w in rep.warnings:
                err.print(_warning_line(w.code, w.message, w.case_id), highlight=False)
            raise fail(f"{len(rep.warnings)} warning(s) and --strict: nothing scored")
    with exit_on((RadfusionError,), per_case=InvalidCasesError), warnings.catch_warnings():
        # said once, per case, as the unseen_category warning
        warnings.filterwarnings("ignore", message="Found unknown categories")
        payload = predict_records(b, cohort)
    if as_json:
        print(json.dumps(payload, indent=2))
        return
    preds = pd.DataFrame(payload_records(payload))
    negative, positive = b.config.evaluation.class_names
    per_case = {c["case_id"]: c["warnings"] for c in payload["cases"] if c["warnings"]}
    several = preds["case_id"].nunique() > 1
    title = "radfusion predictions" + ("" if several else f" for {preds['case_id'].iloc[0]}")
    t = Table(title=esc(f"{title} (study: {b.meta.get('study')})"), header_style="bold")
    # The scores never shrink: names and warning codes wrap instead (a narrow terminal
    # once showed "0.…" for P). One case's warnings are printed in full below the table;
    # with several cases, a column names each case's warning codes.
    several_warned = several and bool(per_case)
    for col in ["case"] if several else []:
        t.add_column(col, overflow="fold")
    t.add_column("model", overflow="fold")
    t.add_column("family", overflow="fold")
    for col in (f"P({positive})", "threshold", "class"):
        t.add_column(esc(col), no_wrap=True, min_width=len(col))
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
        t.add_row(*map(esc, [*([r.case_id] if several else []), *row]))
    out.print(t)
    out.print("* the study's chosen model of each family")
    if payload.get("recalibration"):
        out.print(f"[yellow]note[/] {esc(payload['recalibration'])}", highlight=False)
    for w in payload["warnings"]:
        out.print(_warning_line(w["code"], w["message"], None), highlight=False)
    for case in payload["cases"]:
        for w in case["warnings"]:
            out.print(_warning_line(w["code"], w["message"], case["case_id"]), highlight=False)


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
        out.print(f"[bold cyan]evaluate[/] {esc(message)}", highlight=False)

    with (
        exit_on((*BAD_INPUT, BundleError), failure=(RadfusionError,), per_case=InvalidCasesError),
        out.status("external validation", spinner="dots"),
    ):
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
    for note in result.notes:
        out.print(f"[yellow]note[/] {esc(note)}", highlight=False)
    t = Table(title="External validation (frozen thresholds)", header_style="bold")
    for col in ("model", "n", "AUC (95% CI)", "SEN", "SPE", "cal. slope", "development AUC"):
        t.add_column(col, no_wrap=True)
    comp = result.comparison.set_index("model")
    for r in result.metrics.itertuples(index=False):
        internal = comp.loc[r.model, "internal_auc"]
        t.add_row(
            esc(r.model + (" *" if r.selected else "")),
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
                esc(r.model + (" *" if r.selected else "")),
                f"{r.auc_frozen:.3f}",
                f"{r.auc_harmonised:.3f}",
                "" if r.delong_p != r.delong_p else f"{r.delong_p:.3f}",
            )
        out.print(t)
    out.print(f"report: [bold]{esc(result.report.resolve())}[/]")
    for what, path in (
        ("recalibrated bundle", result.recalibrated_bundle),
        ("harmonised bundle", result.harmonised_bundle),
    ):
        if path is not None:
            out.print(f"{what}: [bold]{esc(path.resolve())}[/]")


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

    with exit_on((BundleError, SignatureError)):
        load_bundle(bundle)  # sign only what verifies now
        path = sign_bundle(bundle, key)
    out.print(f"signature written to {esc(path)}", highlight=False)
