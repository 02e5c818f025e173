"""Evaluate a run folder: every metric, table and figure of the paper's Results, on disk.

:func:`evaluate_run` reads the run folder (through
:class:`~radfusion.evaluation.runfolder.RunArtifacts`) and writes ``RUN/evaluation/`` (the
names are :class:`radfusion.layout.RunLayout`'s):

``metrics.csv``
    Every model x split: AUC and threshold metrics with 95 % CIs, Brier score, threshold.
``thresholds.json``
    The rule, the split it was applied to (training or validation, never test) and each
    model's threshold.
``table1.csv`` / ``table2.csv``
    The paper's Table 1 (numeric p-values) and Table 2 (selected model per family x split).
``delong_<split>.csv``
    Pairwise DeLong p-values between the selected models (Figure 4 C/F/I).
``delong_<family>_<split>.csv``
    Between the classifiers of one family (``delong_radiomics_*``: Figure 3 D-F).
``calibration.csv`` / ``decision_curve.csv``
    Calibration bins and net-benefit curves of the selected models.
``figures/*.png``
    ROC curves, radar plots, DeLong heatmaps, calibration and decision curves, LASSO plots,
    feature importances, epoch-AUC curves.
``evaluation.json``
    Index of the above (figure captions, notes on what was skipped and why, the main models,
    colours) plus the predictions' SHA-256, so the report can tell whether it is current.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from radfusion.config import EvaluationConfig, StudyConfig
from radfusion.errors import RadfusionError
from radfusion.evaluation.figures import (
    plot_calibration,
    plot_decision_curve,
    plot_delong_heatmap,
    plot_importance,
    plot_lasso,
    plot_radar,
    plot_roc,
    plot_training_history,
    save_figure,
)
from radfusion.evaluation.metrics import (
    calibration_table,
    choose_thresholds,
    decision_curve_table,
    delong_matrices,
    families_present,
    family_models,
    main_models,
    metrics_table,
    splits_present,
    table1,
    table2,
)
from radfusion.evaluation.palette import FAMILY_COLORS, SPLIT_LABELS, model_colors
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.families import FAMILY_LABELS, SELECTION_FAMILIES
from radfusion.layout import RunLayout
from radfusion.utils import atomic_path, atomic_write_json, file_sha256

__all__ = ["EvaluationResult", "FigureInfo", "evaluate_run", "load_evaluation"]

_PANEL = {"train": "A", "val": "B", "test": "C"}
_PANEL4 = {"train": ("A", "B", "C"), "val": ("D", "E", "F"), "test": ("G", "H", "I")}
# A figure sink's ``add``: (key, figure or None, caption, report group) -> None.
_AddFigure = Callable[[str, Figure | None, str, str], None]


@dataclass(frozen=True)
class FigureInfo:
    """One figure file with its caption; ``group`` says which report section shows it."""

    key: str
    path: Path
    caption: str
    group: str


@dataclass
class EvaluationResult:
    """What :func:`evaluate_run` computed and wrote.

    Attributes
    ----------
    run_dir, out_dir : Path
        The run folder and its ``evaluation/`` folder.
    thresholds : dict
        Model -> operating threshold.
    main_models : list of str
        The selected model per family, in display order.
    metrics : pandas.DataFrame
        :func:`~radfusion.evaluation.metrics.metrics_table` of every model and split.
    table1 : pandas.DataFrame or None
        Baseline characteristics (None without ``cases.csv``).
    table2 : pandas.DataFrame
        The paper's Table 2 for the main models.
    delong : dict
        ``"main"`` or a family -> split -> p-value matrix.
    figures : dict
        Key -> :class:`FigureInfo`.
    colors : dict
        Model -> colour used in every figure.
    notes : list of str
        What was skipped and why.
    """

    run_dir: Path
    out_dir: Path
    thresholds: dict[str, float]
    main_models: list[str]
    metrics: pd.DataFrame
    table1: pd.DataFrame | None
    table2: pd.DataFrame
    delong: dict[str, dict[str, pd.DataFrame]]
    figures: dict[str, FigureInfo] = field(default_factory=dict)
    colors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    threshold_rule: dict[str, Any] = field(default_factory=dict)


def _write_csv(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)
    return path


def _write_subgroups(
    cases: pd.DataFrame,
    preds: pd.DataFrame,
    thresholds: dict[str, float],
    mains: list[str],
    ev: Any,
    path: Path,
    add_figure: _AddFigure,
) -> list[str]:
    """``path``: ``subgroups.csv`` (per centre and configured subgroup); a forest plot per split."""
    from radfusion.evaluation.subgroups import plot_forest, subgroup_columns, subgroup_table

    groups, notes = subgroup_columns(cases, ev.subgroups, ev.subgroup_bins)
    table = subgroup_table(preds, groups, thresholds, mains, min_events=ev.min_subgroup_events)
    _write_csv(table, path)
    colors = model_colors(preds)
    for split in ("val", "test"):
        rows = table[table["split"] == split].copy()
        if rows.empty:
            continue
        # Each row names its model: several selected models share one subgroup.
        rows["label"] = rows["model"] + ": " + rows["subgroup_column"] + " = " + rows["subgroup"]
        add_figure(
            f"subgroups_{split}",
            plot_forest(
                rows,
                "label",
                title=f"AUC by centre and subgroup: {SPLIT_LABELS[split]} set",
                color_by="model",
                colors=colors,
            ),
            f"AUC with 95% DeLong CI of the selected models in each centre and subgroup, "
            f"{SPLIT_LABELS[split].lower()} set; subgroups with fewer than "
            f"{ev.min_subgroup_events} cases of a class are marked too small.",
            "subgroups",
        )
    return notes


class _FigureSink:
    """Where figures go: saved at ``figure(key)`` and indexed by key, or dropped (``draw`` off).

    Every figure helper takes :meth:`add`, so that turning figures off is decided once.
    """

    def __init__(self, figure: Callable[[str], Path], draw: bool) -> None:
        self.figure = figure
        self.draw = draw
        self.items: dict[str, FigureInfo] = {}

    def add(self, key: str, fig: Figure | None, caption: str, group: str) -> None:
        """Save ``fig`` under its key with its caption (nothing when None or not drawing)."""
        if fig is None or not self.draw:
            return
        path = save_figure(fig, self.figure(key))
        self.items[key] = FigureInfo(key, path, caption, group)


def _threshold_rule(ev: EvaluationConfig) -> dict[str, Any]:
    """The threshold rule as recorded: rule, source split (Youden) and fixed value (fixed)."""
    return {
        "rule": ev.threshold,
        "source_split": ev.threshold_source if ev.threshold == "youden" else None,
        "fixed_threshold": ev.fixed_threshold if ev.threshold == "fixed" else None,
    }


def _write_thresholds(
    preds: pd.DataFrame, ev: EvaluationConfig, layout: RunLayout
) -> dict[str, float]:
    """Choose each model's threshold (never on test) and write ``thresholds.json``."""
    thresholds = choose_thresholds(preds, ev)
    atomic_write_json(layout.thresholds, {**_threshold_rule(ev), "thresholds": thresholds})
    return thresholds


def _write_table1(
    cases: pd.DataFrame | None, cfg: StudyConfig, layout: RunLayout
) -> tuple[pd.DataFrame | None, list[str]]:
    """Table 1 from the cases sheet (``table1.csv``); None and a note without one."""
    if cases is None:
        return None, ["cases.csv not found: Table 1 skipped."]
    t1, notes = table1(cases, cfg)
    _write_csv(t1, layout.table1)
    return t1, list(notes)


def _write_delong(
    preds: pd.DataFrame, mains: list[str], fams: list[str], layout: RunLayout
) -> dict[str, dict[str, pd.DataFrame]]:
    """DeLong p-values: main models (Figure 4) and each family's classifiers (Figure 3).

    Returns ``"main"`` or a family (with two or more models) -> split -> p-value matrix,
    each also written as ``delong_<split>.csv`` / ``delong_<family>_<split>.csv``.
    """
    delong: dict[str, dict[str, pd.DataFrame]] = {"main": delong_matrices(preds, mains)}
    for split, mat in delong["main"].items():
        _write_csv(mat, layout.delong(split), index=True)
    for fam in fams:
        models = family_models(preds, fam)
        if len(models) < 2:
            continue
        delong[fam] = delong_matrices(preds, models)
        for split, mat in delong[fam].items():
            _write_csv(mat, layout.delong(split, fam), index=True)
    return delong


def _write_curve_tables(
    preds: pd.DataFrame, mains: list[str], ev: EvaluationConfig, layout: RunLayout
) -> None:
    """``calibration.csv`` and ``decision_curve.csv`` of the main models."""
    _write_csv(
        calibration_table(preds, mains, ev.calibration_bins, ev.calibration_strategy),
        layout.calibration,
    )
    _write_csv(decision_curve_table(preds, mains), layout.decision_curve)


def _draw_main_figures(
    split: str,
    sp: pd.DataFrame,
    ms: pd.DataFrame,
    mains: list[str],
    colors: dict[str, str],
    delong_split: pd.DataFrame,
    ev: EvaluationConfig,
    add_figure: _AddFigure,
) -> None:
    """Figure 4 (ROC, radar, DeLong) and calibration / decision curves of one split.

    ``sp`` and ``ms`` are the split's predictions and metrics; ``delong_split`` the
    main models' p-value matrix on it.
    """
    label = SPLIT_LABELS[split]
    a, b, c = _PANEL4[split]
    add_figure(
        f"roc_{split}",
        plot_roc(sp, mains, colors, ms, title=f"ROC curves: {label} set"),
        f"Figure 4{a}. ROC curves of the selected model of each family, {label.lower()} "
        "set; AUC with 95% CI in the legend.",
        "figure4",
    )
    add_figure(
        f"radar_{split}",
        plot_radar(ms, mains, colors, title=f"Performance: {label} set"),
        f"Figure 4{b}. ACC, SEN, SPE, PPV, NPV, F1 and AUC at each model's threshold, "
        f"{label.lower()} set.",
        "figure4",
    )
    add_figure(
        f"delong_{split}",
        plot_delong_heatmap(delong_split, title=f"DeLong test: {label} set"),
        f"Figure 4{c}. Two-sided DeLong test p-values between the selected models, "
        f"{label.lower()} set.",
        "figure4",
    )
    add_figure(
        f"calibration_{split}",
        plot_calibration(
            sp,
            mains,
            colors,
            ev.calibration_bins,
            ev.calibration_strategy,
            title=f"Calibration: {label} set",
        ),
        f"Calibration curves ({ev.calibration_bins} {ev.calibration_strategy} bins) of the "
        f"selected models, {label.lower()} set; Brier score in the legend.",
        "calibration",
    )
    add_figure(
        f"decision_curve_{split}",
        plot_decision_curve(sp, mains, colors, title=f"Decision curves: {label} set"),
        f"Decision curves of the selected models, {label.lower()} set: net benefit against "
        "threshold probability, with treat-all and treat-none.",
        "calibration",
    )


def _draw_family_figures(
    split: str,
    preds: pd.DataFrame,
    sp: pd.DataFrame,
    ms: pd.DataFrame,
    fams: list[str],
    mains: list[str],
    colors: dict[str, str],
    delong: dict[str, dict[str, pd.DataFrame]],
    add_figure: _AddFigure,
) -> None:
    """ROC curves and DeLong heatmap of each family's classifiers on one split (Figure 3).

    Families with fewer than two models are skipped; ``sp`` and ``ms`` are the split's
    predictions and metrics.
    """
    label = SPLIT_LABELS[split]
    for fam in fams:
        models = family_models(preds, fam)
        if len(models) < 2:
            continue
        sel = [m for m in models if m in mains]
        fam_label = FAMILY_LABELS.get(fam, fam)
        fig_no = f"Figure 3{_PANEL[split]}. " if fam == "radiomics" else ""
        add_figure(
            f"roc_{fam}_{split}",
            plot_roc(
                sp,
                models,
                colors,
                ms,
                title=f"{fam_label} classifiers: {label} set",
                highlight=sel[0] if sel else None,
            ),
            f"{fig_no}ROC curves of the {fam_label.lower()} classifiers, {label.lower()} "
            "set (the selected classifier drawn thicker).",
            f"family:{fam}",
        )
        fig_no = f"Figure 3{'DEF'['ABC'.index(_PANEL[split])]}. " if fam == "radiomics" else ""
        add_figure(
            f"delong_{fam}_{split}",
            plot_delong_heatmap(delong[fam][split], title=f"{fam_label}: {label} set"),
            f"{fig_no}DeLong test p-values between the {fam_label.lower()} classifiers, "
            f"{label.lower()} set.",
            f"family:{fam}",
        )


def lasso_caption(family: str, selection: dict[str, Any]) -> str:
    """Figure S1's caption, naming only the panels :func:`plot_lasso` draws for ``selection``."""
    path = selection.get("lasso_path") or {}
    parts = []
    if path.get("Cs") and path.get("coefs"):
        parts.append("LASSO path over the penalty grid")
    if selection.get("coefficients"):
        parts.append("coefficients of the kept features")
    what = " and ".join(parts) if parts else "LASSO selection"
    return (
        f"Figure S1 ({FAMILY_LABELS.get(family, family)}). {what[0].upper()}{what[1:]} "
        "(fitted on the training set)."
    )


def has_importance(importance: pd.DataFrame) -> bool:
    """True when at least one feature has a finite, non-zero importance (a plot shows bars)."""
    vals = pd.to_numeric(importance.get("importance"), errors="coerce")
    return bool(((vals.abs() > 0) & vals.notna()).any()) if vals is not None else False


def _draw_lasso_figures(run: RunArtifacts, fams: list[str], add_figure: _AddFigure) -> list[str]:
    """Figure S1: the LASSO plot of each family with a selection stage; returns notes."""
    notes: list[str] = []
    for fam, sel in run.selections.items():
        fig = plot_lasso(sel, title=f"{FAMILY_LABELS.get(fam, fam)}: LASSO feature selection")
        if fig is None:
            notes.append(f"stages/selection_{fam}.json has no LASSO path or coefficients.")
            continue
        add_figure(f"lasso_{fam}", fig, lasso_caption(fam, sel), "lasso")
    missing_sel = [f for f in fams if f in SELECTION_FAMILIES and f not in run.selections]
    if missing_sel:
        notes.append(f"No feature-selection record for: {', '.join(missing_sel)}.")
    return notes


def _draw_importance_figures(
    run: RunArtifacts,
    preds: pd.DataFrame,
    mains: list[str],
    colors: dict[str, str],
    add_figure: _AddFigure,
) -> list[str]:
    """Feature-importance plot of each selected model that recorded one; returns notes."""
    notes: list[str] = []
    meta = preds.drop_duplicates("model").set_index("model")
    for model in mains:
        fam, clf = str(meta.at[model, "family"]), str(meta.at[model, "classifier"])
        imp = run.importance(fam, clf)
        if imp is None and fam in ("1ch", "2ch"):
            continue  # an end-to-end network has no tabular importance; Grad-CAM shows it
        if imp is None:
            notes.append(f"No feature importance for {model} (models/{fam}/{clf}/importance.csv).")
            continue
        if not has_importance(imp):
            # An all-zero or undefined importance (e.g. permutation importance of an SVM whose
            # every permutation ties) would draw an empty axis: say so instead.
            notes.append(
                f"Feature importance of {model} is zero or undefined for every feature: "
                "no plot drawn."
            )
            continue
        add_figure(
            f"importance_{fam}",
            plot_importance(imp, title=f"{model}: feature importance", color=colors[model]),
            f"Largest feature importances of {model} (as recorded by the model stage).",
            "importance",
        )
    return notes


def _draw_training_history(run: RunArtifacts, add_figure: _AddFigure) -> list[str]:
    """Figure S2: epoch-AUC curves of the deep arms; a note when there are none."""
    if not run.histories:
        return ["No deep-learning training history (deep/<arm>/history.csv): Figure S2 skipped."]
    names = {arm: FAMILY_LABELS.get(arm, arm) for arm in run.histories}
    add_figure(
        "training_history",
        plot_training_history(
            {names[a]: h for a, h in run.histories.items()},
            {names[a]: FAMILY_COLORS.get(a, "#333333") for a in run.histories},
        ),
        "Figure S2. Epoch-AUC (and loss) curves of the deep-learning arms: training dashed, "
        "validation solid; a star marks the best validation AUC.",
        "deep",
    )
    return []


def _write_index(result: EvaluationResult, fams: list[str], splits: list[str]) -> None:
    """``evaluation.json``: index of what was written, keyed to the predictions' SHA-256."""
    out = result.out_dir
    layout = RunLayout(result.run_dir)
    atomic_write_json(
        layout.evaluation_index,
        {
            "predictions_sha256": file_sha256(layout.predictions),
            "threshold_rule": result.threshold_rule,
            "thresholds": result.thresholds,
            "main_models": result.main_models,
            "families": fams,
            "splits": splits,
            "colors": result.colors,
            "delong": {g: sorted(d) for g, d in result.delong.items()},
            "figures": {
                k: {"file": str(f.path.relative_to(out)), "caption": f.caption, "group": f.group}
                for k, f in result.figures.items()
            },
            "notes": result.notes,
        },
    )


def evaluate_run(
    run_dir: str | Path, cfg: StudyConfig | None = None, figures: bool = True
) -> EvaluationResult:
    """Compute and write every metric, table and figure of a run (see the module docstring).

    Parameters
    ----------
    run_dir : str or Path
        The run folder.
    cfg : StudyConfig, optional
        Overrides the run's ``config.yaml`` (e.g. another threshold rule).
    figures : bool, default True
        Draw the figures (the slow part); False writes the tables only.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    RadfusionError
        Missing ``config.yaml`` / ``predictions.parquet`` or an invalid predictions table.
    ConfigError
        The threshold cannot be chosen on the configured split.
    """
    run = RunArtifacts(Path(run_dir))
    cfg = cfg or run.config
    ev = cfg.evaluation
    preds = run.predictions
    layout = run.layout
    sink = _FigureSink(layout.figure, draw=figures)

    # Tables: thresholds, metrics, Tables 1 and 2, DeLong, calibration, decision curves.
    thresholds = _write_thresholds(preds, ev, layout)
    metrics = metrics_table(preds, thresholds, ev, seed=cfg.seed)
    _write_csv(metrics, layout.metrics)
    mains = main_models(preds)
    colors = model_colors(preds)
    splits = splits_present(preds)
    fams = families_present(preds)
    t2 = table2(metrics, mains)
    _write_csv(t2, layout.table2)
    t1, notes = _write_table1(run.cases, cfg, layout)
    delong = _write_delong(preds, mains, fams, layout)
    _write_curve_tables(preds, mains, ev, layout)
    if run.cases is not None:
        notes.extend(
            _write_subgroups(run.cases, preds, thresholds, mains, ev, layout.subgroups, sink.add)
        )

    # Figures: per split (Figures 3 and 4), then LASSO, importances, training curves.
    for split in splits if figures else []:
        sp = preds[preds["split"] == split]
        ms = metrics[metrics["split"] == split]
        _draw_main_figures(split, sp, ms, mains, colors, delong["main"][split], ev, sink.add)
        _draw_family_figures(split, preds, sp, ms, fams, mains, colors, delong, sink.add)
    notes.extend(_draw_lasso_figures(run, fams, sink.add))
    notes.extend(_draw_importance_figures(run, preds, mains, colors, sink.add))
    notes.extend(_draw_training_history(run, sink.add))

    result = EvaluationResult(
        run_dir=run.path,
        out_dir=layout.evaluation_dir,
        thresholds=thresholds,
        main_models=mains,
        metrics=metrics,
        table1=t1,
        table2=t2,
        delong=delong,
        figures=sink.items,
        colors=colors,
        notes=notes,
        threshold_rule=_threshold_rule(ev),
    )
    _write_index(result, fams, splits)
    return result


def load_evaluation(run_dir: str | Path) -> EvaluationResult | None:
    """Read a run's ``evaluation/`` back, or None if absent or older than the predictions.

    Parameters
    ----------
    run_dir : str or Path

    Returns
    -------
    EvaluationResult or None
        None when ``evaluation/evaluation.json`` is missing, unreadable, or was computed from
        a different ``predictions.parquet`` (its SHA-256 differs).
    """
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    out = layout.evaluation_dir
    try:
        index = json.loads(layout.evaluation_index.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    preds_file = layout.predictions
    if not preds_file.is_file() or index.get("predictions_sha256") != file_sha256(preds_file):
        return None

    try:
        metrics = pd.read_csv(layout.metrics)
        # an all-empty note column reads back as float NaN; a string column takes ""
        metrics["note"] = metrics["note"].astype(object).fillna("")
        t2 = pd.read_csv(layout.table2).fillna("")
        t1 = pd.read_csv(layout.table1) if layout.table1.is_file() else None
        delong = {
            g: {
                s: pd.read_csv(layout.delong(s, None if g == "main" else g), index_col=0)
                for s in splits
            }
            for g, splits in index["delong"].items()
        }
    except (OSError, KeyError, pd.errors.ParserError):
        return None
    if t1 is not None:
        for col in ("level", "test"):
            if col in t1:
                t1[col] = t1[col].fillna("")
        for col in t1.columns:
            if not str(col).startswith("p (") and col not in ("variable",):
                t1[col] = t1[col].fillna("").astype(str)
    figures = {
        k: FigureInfo(k, out / v["file"], v["caption"], v["group"])
        for k, v in index.get("figures", {}).items()
        if (out / v["file"]).is_file()
    }
    thresholds = {str(k): float(v) for k, v in index["thresholds"].items()}
    if any(not math.isfinite(v) for v in thresholds.values()):
        raise RadfusionError(f"{layout.evaluation_index} holds a non-finite threshold")
    return EvaluationResult(
        run_dir=run_dir,
        out_dir=layout.evaluation_dir,
        thresholds=thresholds,
        main_models=list(index["main_models"]),
        metrics=metrics,
        table1=t1,
        table2=t2,
        delong=delong,
        figures=figures,
        colors=dict(index.get("colors", {})),
        notes=list(index.get("notes", [])),
        threshold_rule=dict(index.get("threshold_rule", {})),
    )
