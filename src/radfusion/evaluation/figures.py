"""The study's figures (matplotlib, Agg, no pyplot state): ROC curves, radar plots, DeLong
heatmaps, calibration and decision curves, LASSO plots, feature importance, epoch-AUC curves.

Each ``plot_*`` function returns a :class:`matplotlib.figure.Figure` (so tests can inspect what
was drawn) and :func:`save_figure` writes it atomically as PNG. Colours come from
:func:`radfusion.evaluation.palette.model_colors`, so a model looks the same everywhere.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from radfusion.radiomics.names import readable_feature_name
from radfusion.stats import (
    brier_score,
    calibration_curve_data,
    decision_curve,
    delong_auc_ci,
    format_p_value,
)
from radfusion.utils import atomic_path

__all__ = [
    "RADAR_AXES",
    "journal_paths",
    "plot_calibration",
    "plot_decision_curve",
    "plot_delong_heatmap",
    "plot_importance",
    "plot_lasso",
    "plot_radar",
    "plot_roc",
    "plot_training_history",
    "save_figure",
]

RADAR_AXES = ("ACC", "SEN", "SPE", "PPV", "NPV", "F1", "AUC")
DPI = 150
#: Resolution of the raster copy for journals (the usual minimum for line art and plots).
JOURNAL_DPI = 300
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@contextlib.contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(_STYLE):
        yield


@contextlib.contextmanager
def _figure(figsize: tuple[float, float]) -> Iterator[Figure]:
    """A constrained-layout figure, drawn with the house style while the block runs."""
    with _style():
        yield Figure(figsize=figsize, layout="constrained")


def _diagonal(ax: Any, **kwargs: Any) -> None:
    """The y = x reference line (chance on ROC axes, perfect calibration)."""
    ax.plot([0, 1], [0, 1], ls=":", color="#999999", lw=1, **kwargs)


def _finish_axes(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels, title and the light grid of every curve plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.25)


def journal_paths(path: str | Path) -> dict[str, Path]:
    """The journal copies :func:`save_figure` writes beside ``path``: SVG and 300-dpi PNG.

    Returns
    -------
    dict
        ``{"svg": <stem>.svg, "png": <stem>.300dpi.png}`` in ``path``'s folder.
    """
    path = Path(path)
    return {"svg": path.with_suffix(".svg"), "png": path.with_name(f"{path.stem}.300dpi.png")}


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG atomically (no half-written file), without software metadata.

    The journal copies (vector SVG and a 300-dpi PNG, :func:`journal_paths`) are written
    beside it, so a figure shown in the report can be submitted as it is.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or Path
    dpi : int, default 150

    Returns
    -------
    Path
        The screen PNG.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    journal = journal_paths(path)
    # No date or tool stamp in the SVG, and fixed ids, so the same figure gives the same bytes.
    svg_rc = {"svg.hashsalt": "radfusion", "svg.fonttype": "path"}
    with matplotlib.rc_context(svg_rc), atomic_path(journal["svg"]) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None, "Creator": None})
    with atomic_path(journal["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=JOURNAL_DPI, metadata={"Software": None})
    return path


def _model_predictions(
    preds: pd.DataFrame, models: Sequence[str], both_classes: bool = False
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(model, labels, probabilities)`` of each of ``models`` that has predictions, in order.

    With ``both_classes`` a model is also skipped when its cases hold one class only (no ROC).
    """
    for model in models:
        sub = preds[preds["model"] == model]
        y, p = sub["label"].to_numpy(dtype=int), sub["probability"].to_numpy(dtype=float)
        if y.size == 0 or (both_classes and y.min() == y.max()):
            continue
        yield model, y, p


def _auc_text(metrics: pd.DataFrame | None, model: str, y: np.ndarray, p: np.ndarray) -> str:
    if metrics is not None:
        row = metrics[metrics["model"] == model]
        if len(row):
            r = row.iloc[0]
            if math.isfinite(r["auc_low"]):
                return f"{r['auc']:.3f} ({r['auc_low']:.3f}–{r['auc_high']:.3f})"
            return f"{r['auc']:.3f}"
    n_pos = int(y.sum())
    if min(n_pos, y.size - n_pos) >= 2:
        auc, lo, hi = delong_auc_ci(y, p)
        return f"{auc:.3f} ({lo:.3f}–{hi:.3f})"
    return "NA"


def plot_roc(
    preds: pd.DataFrame,
    models: Sequence[str],
    colors: Mapping[str, str],
    metrics: pd.DataFrame | None = None,
    title: str = "",
    highlight: str | None = None,
) -> Figure:
    """ROC curves of several models on one split, with AUC (95 % CI) in the legend.

    Parameters
    ----------
    preds : pandas.DataFrame
        Predictions of one split (``model``, ``label``, ``probability``).
    models : sequence of str
        Models drawn, in legend order.
    colors : Mapping[str, str]
        Model -> colour.
    metrics : pandas.DataFrame, optional
        Rows of :func:`~radfusion.evaluation.metrics.metrics_table` for this split; their AUC
        and CI are shown (else a DeLong CI is computed).
    title : str
    highlight : str, optional
        Drawn thicker (e.g. the family's selected model).

    Returns
    -------
    matplotlib.figure.Figure
    """
    with _figure((5.0, 5.0)) as fig:
        ax = fig.add_subplot()
        _diagonal(ax)
        for model, y, p in _model_predictions(preds, models, both_classes=True):
            fpr, tpr, _ = roc_curve(y, p)
            lw = 2.6 if model == highlight else 1.7
            ax.plot(
                fpr,
                tpr,
                color=colors[model],
                lw=lw,
                label=f"{model}: {_auc_text(metrics, model, y, p)}",
            )
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        _finish_axes(ax, "1 − specificity", "Sensitivity", title)
        ax.legend(loc="lower right", title="AUC (95% CI)", title_fontsize=8, framealpha=0.9)
    return fig


def plot_radar(
    metrics: pd.DataFrame, models: Sequence[str], colors: Mapping[str, str], title: str = ""
) -> Figure:
    """Radar plot of ACC, SEN, SPE, PPV, NPV, F1 and AUC of several models on one split.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Rows of :func:`~radfusion.evaluation.metrics.metrics_table` for one split.
    models : sequence of str
    colors : Mapping[str, str]
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        Undefined metrics (NaN) are drawn at 0.
    """
    angles = np.linspace(0.0, 2.0 * np.pi, len(RADAR_AXES), endpoint=False)
    closed = np.r_[angles, angles[:1]]
    with _figure((5.0, 5.0)) as fig:
        ax = fig.add_subplot(projection="polar")
        ax.set_theta_offset(np.pi / 2.0)
        ax.set_theta_direction(-1)
        for model in models:
            row = metrics[metrics["model"] == model]
            if row.empty:
                continue
            r = row.iloc[0]
            vals = np.array([float(r[a.lower()]) for a in RADAR_AXES])
            vals = np.nan_to_num(vals, nan=0.0)
            ax.plot(closed, np.r_[vals, vals[:1]], color=colors[model], lw=1.8, label=model)
            ax.fill(closed, np.r_[vals, vals[:1]], color=colors[model], alpha=0.03)
        ax.set_xticks(angles)
        ax.set_xticklabels(RADAR_AXES, fontsize=10)
        ax.set_ylim(0.0, 1.0)
        ax.set_yticks([0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_yticklabels(["0.2", "0.4", "0.6", "0.8", "1.0"], fontsize=7, color="#555555")
        ax.set_rlabel_position(180 / len(RADAR_AXES))
        # Keep the tick labels legible above the model lines (white halo, drawn on top).
        for lbl in ax.get_yticklabels():
            lbl.set_bbox({"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.6})
            lbl.set_zorder(10)
        ax.yaxis.set_zorder(5)  # the axis (hence its labels) is drawn below lines by default
        ax.tick_params(axis="x", pad=9)
        ax.set_title(title, pad=14)
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.06),
            ncol=2,
            frameon=False,
        )
    return fig


def _short_names(names: list[str]) -> list[str]:
    """Drop a prefix shared by every name up to a separator ("Radiomics-LR" -> "LR")."""
    if len(names) < 2:
        return names
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    cut = max(prefix.rfind("-"), prefix.rfind("_"), prefix.rfind(" "))
    if cut <= 0:
        return names
    return [n[cut + 1 :] for n in names]


def plot_delong_heatmap(matrix: pd.DataFrame, title: str = "", short_names: bool = True) -> Figure:
    """Heatmap of pairwise DeLong p-values, annotated ("<0.001" style).

    Parameters
    ----------
    matrix : pandas.DataFrame
        Square p-value matrix (:func:`~radfusion.evaluation.metrics.delong_matrices`).
    title : str
    short_names : bool, default True
        Drop a prefix every model name shares ("Radiomics-LR" -> "LR"); the title should
        then name the family.

    Returns
    -------
    matplotlib.figure.Figure
        Colour is ``-log10(p)`` (saturating at p = 0.0001); the diagonal is grey.
    """
    names = [str(c) for c in matrix.columns]
    labels = _short_names(names) if short_names else names
    k = len(names)
    p = matrix.to_numpy(dtype=float)
    score = -np.log10(np.clip(p, 1e-4, 1.0))
    off = ~np.eye(k, dtype=bool)
    shown = np.where(off & np.isfinite(p), score, np.nan)
    longest = max((len(n) for n in labels), default=4)
    # Cells stay roughly square while the labels get the room they need; aspect "auto" lets
    # constrained layout fit long tick labels instead of clipping them.
    cells = max(2.4, 0.62 * k)
    width = cells + 0.085 * longest + 1.7
    height = cells + 0.06 * longest + 0.7
    with _figure((width, height)) as fig:
        ax = fig.add_subplot()
        ax.set_facecolor("#e6e6e6")
        cmap = ListedColormap(matplotlib.colormaps["YlOrRd"](np.linspace(0.05, 0.95, 256)))
        im = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=4.0, aspect="auto")
        fs = 10 if k <= 4 else 9 if k <= 7 else 8
        for i in range(k):
            for j in range(k):
                if i == j:
                    text, colour = "—", "#555555"
                elif not math.isfinite(p[i, j]):
                    text, colour = "NA", "#555555"
                else:
                    text = format_p_value(p[i, j])
                    colour = "white" if score[i, j] > 2.6 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=fs, color=colour)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(labels, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticklabels(labels)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(title)
        cbar = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
        ticks = [1.0, 0.05, 0.01, 0.001, 0.0001]
        cbar.set_ticks([-math.log10(t) for t in ticks])
        cbar.set_ticklabels(["1", "0.05", "0.01", "0.001", "≤0.0001"])
        cbar.set_label("DeLong p-value (two-sided)")
    return fig


def plot_calibration(
    preds: pd.DataFrame,
    models: Sequence[str],
    colors: Mapping[str, str],
    n_bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
    title: str = "",
) -> Figure:
    """Calibration (reliability) curves on one split, with each model's Brier score.

    Parameters
    ----------
    preds : pandas.DataFrame
        Predictions of one split.
    models : sequence of str
    colors : Mapping[str, str]
    n_bins : int, default 10
    strategy : {"quantile", "uniform"}, default "quantile"
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    with _figure((5.0, 5.6)) as fig:
        ax = fig.add_subplot()
        _diagonal(ax, label="ideal")
        for model, y, p in _model_predictions(preds, models):
            cal = calibration_curve_data(y, p, n_bins=n_bins, strategy=strategy)
            ax.plot(
                cal["mean_predicted"],
                cal["observed"],
                "-o",
                ms=4,
                lw=1.6,
                color=colors[model],
                label=f"{model} (Brier {brier_score(y, p):.3f})",
            )
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        _finish_axes(ax, "Mean predicted probability", "Observed fraction positive", title)
        # Below the axes: miscalibrated curves can run through any corner of the plot.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    return fig


def plot_decision_curve(
    preds: pd.DataFrame, models: Sequence[str], colors: Mapping[str, str], title: str = ""
) -> Figure:
    """Decision curves (net benefit vs threshold probability) with treat-all and treat-none.

    Parameters
    ----------
    preds : pandas.DataFrame
        Predictions of one split.
    models : sequence of str
    colors : Mapping[str, str]
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    with _figure((5.0, 5.6)) as fig:
        ax = fig.add_subplot()
        prevalence = math.nan
        for model, y, p in _model_predictions(preds, models):
            dc = decision_curve(y, p)
            prevalence = float(y.mean())
            ax.plot(
                dc["threshold"],
                dc["net_benefit_model"],
                color=colors[model],
                lw=1.7,
                label=model,
                zorder=2,
            )
        if math.isfinite(prevalence):
            ax.plot(
                dc["threshold"],
                dc["net_benefit_all"],
                color="#444444",
                lw=1.3,
                ls=(0, (4, 3)),
                label="treat all",
                zorder=4,  # above the models: a model no better than treat-all hides it else
            )
            ax.axhline(0.0, color="black", lw=1.0, label="treat none", zorder=4)
            ax.set_ylim(-0.05, max(0.05, prevalence * 1.15))
        ax.set_xlim(0.0, 1.0)
        _finish_axes(ax, "Threshold probability", "Net benefit", title)
        # Below the axes: net-benefit curves fill the upper part of the plot.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    return fig


def plot_lasso(selection: Mapping[str, Any], title: str = "", max_bars: int = 30) -> Figure | None:
    """LASSO path and the kept features' coefficients (the paper's Figure S1).

    Parameters
    ----------
    selection : Mapping
        A ``stages/selection_<family>.json`` dict: ``coefficients`` {feature: coef},
        ``lasso_path`` {"Cs", "coefs" (n_Cs x n_features), "features"} and ``C``.
    title : str
    max_bars : int, default 30
        Largest |coefficients| shown as bars.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when neither the path nor coefficients are recorded.
    """
    coefs = {str(k): float(v) for k, v in (selection.get("coefficients") or {}).items()}
    path = selection.get("lasso_path") or {}
    have_path = bool(path.get("Cs")) and bool(path.get("coefs"))
    if not coefs and not have_path:
        return None
    shown = sorted(coefs.items(), key=lambda kv: abs(kv[1]), reverse=True)[:max_bars]
    shown = sorted(shown, key=lambda kv: kv[1])
    height = max(4.0, 0.22 * len(shown) + 1.4)
    with _figure((12.0 if have_path and coefs else 7.0, height)) as fig:
        axes = fig.subplots(1, int(have_path) + int(bool(coefs)), squeeze=False)[0]
        i = 0
        if have_path:
            ax = axes[i]
            i += 1
            cs = np.asarray(path["Cs"], dtype=float)
            mat = np.asarray(path["coefs"], dtype=float)
            x = np.log10(cs)
            ax.plot(x, mat, lw=0.8, alpha=0.7)
            if selection.get("C"):
                ax.axvline(
                    math.log10(float(selection["C"])),
                    color="black",
                    ls="--",
                    lw=1.0,
                    label=f"chosen C = {float(selection['C']):.3g}",
                )
                ax.legend(loc="upper left")
            ax.axhline(0.0, color="#999999", lw=0.6)
            _finish_axes(
                ax, "log10(C)  (C = 1/λ: weaker penalty to the right)", "Coefficient", "LASSO path"
            )
        if coefs:
            ax = axes[i]
            names = [readable_feature_name(str(k)) for k, _ in shown]
            vals = [v for _, v in shown]
            colours = ["#d62728" if v > 0 else "#1f5fa8" for v in vals]
            ax.barh(range(len(vals)), vals, color=colours)
            ax.set_yticks(range(len(vals)))
            ax.set_yticklabels(names, fontsize=7 if len(vals) > 15 else 8)
            ax.axvline(0.0, color="black", lw=0.6)
            ax.set_xlabel("LASSO coefficient")
            extra = f" (largest {len(shown)} of {len(coefs)})" if len(coefs) > len(shown) else ""
            ax.set_title(f"{len(coefs)} selected features{extra}")
            ax.grid(axis="x", alpha=0.25)
        fig.suptitle(title)
    return fig


def plot_importance(
    importance: pd.DataFrame, title: str = "", color: str = "#1f5fa8", top: int = 20
) -> Figure:
    """Horizontal bars of the largest feature importances (by absolute value).

    Parameters
    ----------
    importance : pandas.DataFrame
        Columns ``feature``, ``importance``.
    title : str
    color : str
    top : int, default 20

    Returns
    -------
    matplotlib.figure.Figure
    """
    df = importance.assign(_abs=importance["importance"].abs())
    df = df.sort_values("_abs", ascending=False).head(top).iloc[::-1]
    with _figure((7.5, max(3.0, 0.24 * len(df) + 1.2))) as fig:
        ax = fig.add_subplot()
        ax.barh(range(len(df)), df["importance"], color=color)
        ax.set_yticks(range(len(df)))
        names = [readable_feature_name(str(f)) for f in df["feature"]]
        ax.set_yticklabels(names, fontsize=7 if len(df) > 15 else 8)
        ax.axvline(0.0, color="black", lw=0.6)
        ax.set_xlabel("Importance")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.25)
    return fig


def plot_training_history(
    histories: Mapping[str, pd.DataFrame], colors: Mapping[str, str]
) -> Figure:
    """Epoch-AUC (and epoch-loss) curves of the deep arms (the paper's Figure S2).

    Parameters
    ----------
    histories : Mapping[str, pandas.DataFrame]
        Name (e.g. "1ch ResNet") -> ``history.csv`` (``epoch, train_loss, train_auc,
        val_auc[, val_loss]``).
    colors : Mapping[str, str]
        Name -> colour.

    Returns
    -------
    matplotlib.figure.Figure
        Training dashed, validation solid; the epoch of best validation AUC marked.
    """
    has_loss = any("train_loss" in h for h in histories.values())
    with _figure((11.0 if has_loss else 6.0, 4.2)) as fig:
        axes = fig.subplots(1, 2 if has_loss else 1, squeeze=False)[0]
        for name, h in histories.items():
            colour = colors.get(name, "#333333")
            for ax, metric in zip(axes, ("auc", "loss"), strict=False):
                for split, ls in (("train", "--"), ("val", "-")):
                    col = f"{split}_{metric}"
                    if col in h and h[col].notna().any():
                        tag = "training" if split == "train" else "validation"
                        ax.plot(
                            h["epoch"],
                            h[col],
                            ls=ls,
                            color=colour,
                            lw=1.6,
                            marker="o",
                            ms=2.5,
                            label=f"{name} {tag}",
                        )
            if "val_auc" in h and h["val_auc"].notna().any():
                best = h.loc[h["val_auc"].idxmax()]
                axes[0].plot(
                    best["epoch"], best["val_auc"], marker="*", ms=12, color=colour, ls="none"
                )
        titles = ("Epoch-AUC", "Epoch-loss")
        for ax, t, lab in zip(axes, titles, ("AUC", "Loss"), strict=False):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _finish_axes(ax, "Epoch", lab, t)
            ax.legend(framealpha=0.9)
        axes[0].set_ylim(0.0, 1.02)
    return fig
