"""Per-epoch checkpoints, so that a run longer than a session resumes where it stopped.

`train_model ... --resume DIR` writes them to DIR (outside the repository: the work tree is laid anew
each session) and, where DIR already holds a run with the same settings, carries on from its last
finished epoch: phase 1 is not repeated, and phase 2 goes on from the saved weights, optimizer state
(its step count, so the cosine decay continues, and the moving average of the weights) and the
best-so-far record. A run with other settings in the same folder is refused, never mixed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ml.training.config import TrainConfig

SETTINGS = "settings.json"
PHASE1 = "phase1"
EPOCH = "phase2-epoch"
# Settings that do not change what is trained: a resumed run may differ in them. split_block only groups the
# same layers (and their weights, in the same order) into the lower and upper parts the image gate reads.
NOT_COMPARED = ("output", "cache_dir", "workers", "resume", "split_block")


def _settings(config: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k not in NOT_COMPARED}


def _save(folder: Path, name: str, arrays: dict[str, list[np.ndarray]], state: dict[str, Any]) -> None:
    """name.npz and name.json, each written whole before it replaces the last (a kill leaves the old pair)."""
    flat = {f"{key}_{i}": a for key, values in arrays.items() for i, a in enumerate(values)}
    counts = {key: len(values) for key, values in arrays.items()}
    tmp = folder / f".{name}.tmp.npz"
    np.savez(tmp, **flat)
    os.replace(tmp, folder / f"{name}.npz")
    tmp = folder / f".{name}.tmp.json"
    tmp.write_text(json.dumps({"counts": counts, "state": state}))
    os.replace(tmp, folder / f"{name}.json")


def _load(folder: Path, name: str):
    if not (folder / f"{name}.json").is_file() or not (folder / f"{name}.npz").is_file():
        return None
    saved = json.loads((folder / f"{name}.json").read_text())
    with np.load(folder / f"{name}.npz") as data:
        arrays = {key: [data[f"{key}_{i}"] for i in range(n)] for key, n in saved["counts"].items()}
    return arrays, saved["state"]


class Checkpoints:
    def __init__(self, folder: str | Path, config: TrainConfig):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        settings = _settings(config)
        path = self.folder / SETTINGS
        if path.is_file():
            # a key that is compared no more (split_block, once) is left out of the earlier settings too
            before = {k: v for k, v in json.loads(path.read_text()).items() if k not in NOT_COMPARED}
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            if changed:
                raise ValueError(
                    f"{self.folder} holds a run with other settings ({', '.join(changed)}): "
                    "resume it with the same ones, or give another folder"
                )
        else:
            path.write_text(json.dumps(settings, indent=2))

    def save_phase1(self, weights: list[np.ndarray], state: dict[str, Any]) -> None:
        _save(self.folder, PHASE1, {"weights": weights}, state)

    def phase1(self):
        """(weights, state) of a finished phase 1, or None."""
        found = _load(self.folder, PHASE1)
        return None if found is None else (found[0]["weights"], found[1])

    def save_epoch(self, weights, optimizer_variables, best_weights, state: dict[str, Any]) -> None:
        _save(
            self.folder,
            EPOCH,
            {"weights": weights, "optimizer": optimizer_variables, "best": best_weights or []},
            state,
        )

    def last_epoch(self):
        """(arrays, state) of the last finished phase-2 epoch, or None."""
        return _load(self.folder, EPOCH)
