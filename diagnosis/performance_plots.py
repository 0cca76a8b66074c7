"""The performance page's two plots, drawn on the server with matplotlib (no JavaScript).

matplotlib's object API (Figure + the Agg canvas), not pyplot: pyplot keeps global
state and is not safe in a threaded server. Each function returns PNG bytes, or None
when there is nothing to draw.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .performance import Summary


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def roc_png(overall: Summary, by_model_version: dict[str, Summary]) -> bytes | None:
    """The ROC curve of all confirmed cases (and of each model version, when there are
    several), with the two operating points of the saved rules marked."""
    if not overall.roc:
        return None
    figure = Figure(figsize=(5, 4.6))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#bbbbbb", linestyle="--", linewidth=1, label="chance")
    curves = {"all versions": overall}
    if len(by_model_version) > 1:
        curves.update({version: summary for version, summary in by_model_version.items() if summary.roc})
    for name, summary in curves.items():
        auc = f" (AUC {summary.auc:.2f})" if summary.auc is not None else ""
        axes.step(
            [p["fpr"] for p in summary.roc],
            [p["tpr"] for p in summary.roc],
            where="post",
            linewidth=2 if name == "all versions" else 1,
            label=f"{name}{auc}",
        )
    for rule, marker in (("threshold", "o"), ("with_uncertain_band", "s")):
        figures = overall.rules[rule]
        sensitivity, specificity = figures.sensitivity.value, figures.specificity.value
        if sensitivity is not None and specificity is not None:
            axes.plot(
                [1 - specificity],
                [sensitivity],
                marker=marker,
                markersize=8,
                linestyle="none",
                color="#a3231a",
                label=figures.label.lower(),
            )
    axes.set(
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        xlabel="1 - specificity (benign referred)",
        ylabel="sensitivity (malignant referred)",
        title="ROC, confirmed cases",
    )
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def calibration_png(overall: Summary) -> bytes | None:
    """Predicted probability against the fraction that turned out malignant, per bin,
    with the 95% Wilson interval and the number of cases in each bin."""
    filled = [row for row in overall.calibration if row["cases"]]
    if not filled:
        return None
    figure = Figure(figsize=(5, 4.6))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#bbbbbb", linestyle="--", linewidth=1, label="perfectly calibrated")
    x = [row["mean_predicted"] for row in filled]
    y = [row["observed"].value for row in filled]
    # max(0, ...): at 0% or 100% the interval's end equals the value up to rounding.
    below = [max(0.0, row["observed"].value - row["observed"].low) for row in filled]
    above = [max(0.0, row["observed"].high - row["observed"].value) for row in filled]
    axes.errorbar(x, y, yerr=[below, above], marker="o", capsize=3, color="#24549c", label="confirmed cases (95% CI)")
    for row, px, py in zip(filled, x, y):
        axes.annotate(f"n={row['cases']}", (px, py), textcoords="offset points", xytext=(6, -12), fontsize=8)
    axes.set(
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        xlabel="predicted probability of malignancy",
        ylabel="fraction malignant (final diagnosis)",
        title="Calibration, confirmed cases",
    )
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)
