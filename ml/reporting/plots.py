"""The evaluation plots: ROC, calibration, confusion matrix, training curves (matplotlib, no screen)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)
import numpy as np  # noqa: E402

from ml.artifact import CLASS_NAMES
from ml.reporting.metrics import _ratio, calibration_curve, confusion, expected_calibration_error, roc_auc, roc_curve  # noqa: E402


def plot_evaluation(y, p, threshold: float, out_dir, prefix: str = "", title: str = "") -> list[str]:
    """ROC, calibration curve and confusion matrix as PNG files; returns their names."""
    out_dir = Path(out_dir)
    names = []
    fpr, tpr = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc(y, p):.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    c = confusion(y, p, threshold)
    ax.plot(
        [_ratio(c["fp"], c["fp"] + c["tn"])],
        [_ratio(c["tp"], c["tp"] + c["fn"])],
        "o",
        color="C3",
        label=f"threshold {threshold:.3f}",
    )
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC {title}".strip())
    ax.legend(loc="lower right")
    names.append(_save(fig, out_dir / f"{prefix}roc.png"))
    mean_p, frac, counts = calibration_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(mean_p, frac, "o-", label=f"ECE {expected_calibration_error(y, p):.3f}")
    ax.set(
        xlabel="predicted probability of malignancy",
        ylabel="observed share malignant",
        title=f"Calibration {title}".strip(),
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    names.append(_save(fig, out_dir / f"{prefix}calibration.png"))
    fig, ax = plt.subplots(figsize=(4, 3.6))
    matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="black")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=list(CLASS_NAMES),
        yticklabels=list(CLASS_NAMES),
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion {title}".strip(),
    )
    names.append(_save(fig, out_dir / f"{prefix}confusion_matrix.png"))
    return names


def plot_history(history: dict[str, list[float]], out_dir, phases: list[int] | None = None) -> list[str]:
    """Accuracy and loss per epoch for training and validation, as the original project had.

    `history` is one run's Keras history, or {run name: history} to draw several runs in one plot."""

    runs = history if all(isinstance(v, dict) for v in history.values()) else {"": history}
    names = []
    for metric in ("accuracy", "loss"):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for run, run_history in runs.items():
            for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
                if run_history.get(key):
                    ax.plot(
                        range(1, len(run_history[key]) + 1), run_history[key], label=f"{run}: {label}" if run else label
                    )
        for boundary in phases or []:
            ax.axvline(boundary + 0.5, color="grey", ls=":")
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch (dotted: start of fine-tuning)")
        ax.legend()
        names.append(_save(fig, Path(out_dir) / f"{metric}_curve.png"))
    return names


def _save(fig, path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)

    plt.close(fig)
    return path.name
