"""The one training loop, in Keras alone: TensorFlow's backend here, JAX's on a GPU machine.

Two phases, the original project's recipe with what fine-tuning on a CPU taught us added:

1. The head alone on the frozen backbone: pooled features of balanced views of the training
   images (each benign image `benign_views` times, each malignant one as often as balance needs;
   the first view unaugmented), Adam 1e-3, binary cross-entropy, 20 epochs.
2. Every block (BatchNormalization frozen), from images augmented afresh in half-benign,
   half-malignant batches (ml.training.batches), Adam with cosine decay. After each epoch the
   weights averaged over about the last epoch (the optimizer's exponential moving average) are
   scored on the validation split; the best of them are kept, and training stops after
   `patience` epochs without a better validation AUC. Phase 2 is kept only where it beat phase 1
   on validation.

Nothing here reads the test split, imports TensorFlow or Django: ml.training.trainer calls it
here, ml.training.remote on a GPU machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from ml.model.network import Network, NetworkSpec
from ml.reporting.metrics import log_loss, roc_auc
from ml.training.batches import AugmentedBatches, augmented_views
from ml.training.checkpoints import Checkpoints
from ml.training.config import TrainConfig

Log = Callable[[str], None]


def network_spec(config: TrainConfig) -> NetworkSpec:
    return NetworkSpec(
        backbone=config.backbone,
        padding=config.padding,
        image_size=config.image_size,
        weights=config.weights,
        split_block=config.split_block,
        dense_units=config.dense_units,
        dropout=config.dropout,
    )


def view_counts(y: np.ndarray, benign_views: int, max_views: int) -> tuple[int, int]:
    """Views per benign and per malignant image so the two classes come out about even."""
    n_mal, n_ben = int(y.sum()), int(len(y) - y.sum())
    if n_mal == 0 or n_ben == 0:
        return benign_views, benign_views
    malignant_views = int(round(benign_views * n_ben / n_mal))
    return benign_views, int(min(max(malignant_views, 1), max_views))


def view_indices(y: np.ndarray, benign_views: int, malignant_views: int) -> list[np.ndarray]:
    """Which training images each view holds: view 1 every image (unaugmented), then every image up to
    benign_views, then the malignant images alone."""
    return [
        np.arange(len(y)) if v < benign_views else np.flatnonzero(y == 1)
        for v in range(max(benign_views, malignant_views))
    ]


def onehot(y: np.ndarray) -> np.ndarray:
    return np.eye(2, dtype=np.float32)[np.asarray(y, dtype=int)]


def malignant_scores(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return model.predict(np.asarray(x, dtype=np.float32), batch_size=batch_size, verbose=0)[:, 1]


def _verbose() -> int:
    return 1 if sys.stdout.isatty() else 2


class AveragedWeights(keras.callbacks.Callback):
    """Validate the optimizer's moving average of the weights after each epoch, keep the best, stop
    after `patience` epochs without a better AUC. Fine-tuning every block makes the weights wander
    (validation AUC swung between 0.82 and 0.94 from epoch to epoch); their average wanders less."""

    def __init__(self, x_val, y_val, patience: int, log: Log):
        super().__init__()
        self.x_val, self.y_val, self.patience, self.log = x_val, np.asarray(y_val), patience, log
        self.best_auc, self.best_weights, self.best_epoch, self.wait = -np.inf, None, None, 0
        self.history: dict[str, list[float]] = {}
        self.started = time.time()
        # phase 2's seconds in earlier sessions of a resumed run (None where its checkpoint did not say)
        self.seconds_before: float | None = 0.0

    def seconds(self) -> float | None:
        """Phase 2's seconds so far, over every session of a resumed run."""
        return None if self.seconds_before is None else self.seconds_before + time.time() - self.started

    def on_epoch_end(self, epoch, logs=None):
        current = self.model.get_weights()
        self.model.optimizer.finalize_variable_values(self.model.trainable_variables)  # the averages, in place
        p = malignant_scores(self.model, self.x_val)
        auc = roc_auc(self.y_val, p)
        for key, value in {
            **(logs or {}),
            "val_auc": auc,
            "val_loss": log_loss(self.y_val, p),
            "val_accuracy": float(np.mean((p >= 0.5) == self.y_val)),
        }.items():
            self.history.setdefault(key, []).append(float(value))
        if auc > self.best_auc:
            self.best_auc, self.best_weights, self.best_epoch, self.wait = auc, self.model.get_weights(), epoch + 1, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
        self.model.set_weights(current)
        self.log(
            f"epoch {epoch + 1}: validation AUC of the averaged weights {auc:.4f} "
            f"(best {self.best_auc:.4f}, epoch {self.best_epoch}; {time.time() - self.started:.0f} s)"
        )

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def state(self) -> dict[str, Any]:
        return {
            "best_auc": float(self.best_auc),
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "history": self.history,
            "seconds": self.seconds(),
        }

    def restore(self, state: dict[str, Any], best_weights) -> None:
        self.best_auc, self.best_epoch, self.wait = state["best_auc"], state["best_epoch"], state["wait"]
        self.history, self.best_weights = state["history"], best_weights or None
        self.seconds_before = state.get("seconds")
        self.started = time.time()


class SaveEpochs(keras.callbacks.Callback):
    """After AveragedWeights has scored an epoch: the weights, the optimizer's variables and the
    best-so-far record, into the run's checkpoints (ml.training.checkpoints)."""

    def __init__(self, checkpoints: Checkpoints, averaged: AveragedWeights):
        super().__init__()
        self.checkpoints, self.averaged = checkpoints, averaged

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save_epoch(
            self.model.get_weights(),
            [keras.ops.convert_to_numpy(v) for v in self.model.optimizer.variables],
            self.averaged.best_weights,
            {**self.averaged.state(), "epochs_done": epoch + 1},
        )


def fit_network(
    config: TrainConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    sources=None,
    pool=None,
    checkpoints: Checkpoints | None = None,
    log: Log = print,
) -> tuple[Network, dict[str, Any]]:
    """Train the network on uint8 images (N, side, side, 3); returns it (its weights the kept ones) and a
    record: history, both phases' validation AUC, which phase was kept, the training prior that
    calibration undoes, the views and the seconds each phase took. sources: each training image's
    source, where there are several (phase 2's batches weigh them, ml.training.batches). checkpoints: where
    each finished phase and epoch is saved, and resumed from."""
    keras.utils.set_random_seed(config.seed)
    net = Network(network_spec(config))
    net.freeze_backbone()
    started = time.time()

    # Phase 1: the head on the frozen backbone's pooled features of balanced views.
    done = checkpoints.phase1() if checkpoints else None
    earlier = 0.0  # seconds spent in earlier sessions of a resumed run (None where they were not recorded)
    if done is not None:
        phase1_weights, p1 = done
        net.model.set_weights(phase1_weights)
        log(f"phase 1 resumed from {checkpoints.folder}: validation AUC {p1['auc']:.4f}")
        earlier = p1["seconds"]["cache_features"] + p1["seconds"]["phase1_head"]
    else:
        p1 = _phase1(net, config, x_train, y_train, x_val, y_val, started, log)
        phase1_weights = net.model.get_weights()
        if checkpoints:
            checkpoints.save_phase1(phase1_weights, p1)
    history = {k: list(v) for k, v in p1["history"].items()}
    phase1_auc = p1["auc"]

    # Phase 2: every block, balanced batches augmented afresh, averaged weights validated.
    phase2_started = time.time()
    phase2_auc = phase2_seconds = None
    epochs_done = 0
    if config.finetune_epochs > 0:
        keras.utils.set_random_seed(config.phase2_seed)
        net.unfreeze_backbone()
        steps = max(1, len(y_train) // config.batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.finetune_learning_rate, steps * config.finetune_epochs, alpha=0.05
        )
        optimizer = keras.optimizers.Adam(schedule, use_ema=True, ema_momentum=1.0 - 1.0 / steps)
        net.model.compile(optimizer, "binary_crossentropy", metrics=["accuracy"])
        log(
            f"phase 2: every block trainable, {steps} balanced batches an epoch, Adam "
            f"{config.finetune_learning_rate:g} with cosine decay, up to {config.finetune_epochs} epochs, "
            f"patience {config.patience}"
        )
        averaged = AveragedWeights(x_val, y_val, config.patience, log)
        callbacks: list = [averaged]
        epochs_done = 0
        last = checkpoints.last_epoch() if checkpoints else None
        if last is not None:
            arrays, state = last
            optimizer.build(net.model.trainable_variables)
            for variable, value in zip(optimizer.variables, arrays["optimizer"]):
                variable.assign(value)
            net.model.set_weights(arrays["weights"])
            averaged.restore(state, arrays["best"])
            epochs_done = state["epochs_done"]
            earlier = None if averaged.seconds_before is None else earlier + averaged.seconds_before
            log(
                f"phase 2 resumed from {checkpoints.folder} after epoch {epochs_done} "
                f"(best validation AUC {averaged.best_auc:.4f}, epoch {averaged.best_epoch})"
            )
        if checkpoints:
            callbacks.append(SaveEpochs(checkpoints, averaged))
        # A resumed run draws fresh batches (another seed) rather than the first epochs' again.
        batches = AugmentedBatches(
            x_train, y_train, config.batch_size, config.phase2_seed + 1000 * epochs_done, pool=pool, sources=sources
        )
        if epochs_done < config.finetune_epochs and averaged.wait < config.patience:
            net.model.fit(
                batches.generator(),
                steps_per_epoch=steps,
                epochs=config.finetune_epochs,
                initial_epoch=epochs_done,
                shuffle=False,
                verbose=_verbose(),
                callbacks=callbacks,
            )
        elif averaged.best_weights is not None:
            net.model.set_weights(averaged.best_weights)
        phase2_auc = float(averaged.best_auc)
        phase2_seconds = averaged.seconds()
        for k, v in averaged.history.items():
            history.setdefault(k, []).extend(v)
        if phase2_auc < phase1_auc:
            log("fine-tuning did not beat the frozen backbone on validation: keeping phase 1's weights")
            net.model.set_weights(phase1_weights)
    kept = "finetuned" if phase2_auc is not None and phase2_auc >= phase1_auc else "frozen"
    record = {
        "history": history,
        "phases": {
            "validation_auc_frozen": phase1_auc,
            "validation_auc_finetuned": phase2_auc,
            "kept": kept,
            "phase1_epochs": config.epochs,
        },
        # The malignant share the kept weights were trained on, which calibration undoes.
        "train_prior": 0.5 if kept == "finetuned" else p1["views"]["n_malignant"] / p1["views"]["n"],
        "training_views": p1["views"],
        "seconds": {
            **p1["seconds"],
            # over every session of a resumed run; this session's alone where earlier ones were not recorded
            "phase2_finetune": round(phase2_seconds if phase2_seconds is not None else time.time() - phase2_started, 1),
            "total": round(time.time() - started + (earlier or 0.0), 1),
            "earlier_sessions": None if earlier is None else round(earlier, 1),
            "resumed_after_epoch": epochs_done,
        },
    }
    return net, record


def _phase1(net: Network, config: TrainConfig, x_train, y_train, x_val, y_val, started: float, log: Log):
    """Phase 1; returns its record (validation AUC, history, views, seconds)."""
    benign_views, malignant_views = view_counts(y_train, config.benign_views, config.max_views)
    log(f"phase 1: {benign_views} views per benign image, {malignant_views} per malignant image (view 1 unaugmented)")
    f_parts, l_parts = [], []
    for v, idx in enumerate(view_indices(y_train, benign_views, malignant_views)):
        images = x_train[idx] if v == 0 else augmented_views(x_train[idx], seed=config.seed * 1000 + v)
        f_parts.append(net.features.predict(images.astype(np.float32), batch_size=64, verbose=0))
        l_parts.append(y_train[idx])
    f_train, labels_train = np.concatenate(f_parts), np.concatenate(l_parts)
    f_val = net.features.predict(x_val.astype(np.float32), batch_size=64, verbose=0)
    features_seconds = time.time() - started
    # multi_label: the mean of each column's AUC, which for two softmax columns is the malignant AUC
    # (the default pools both columns into one curve and reads higher).
    auc = keras.metrics.AUC(name="auc", multi_label=True, num_labels=2)
    net.head.compile(keras.optimizers.Adam(config.learning_rate), "binary_crossentropy", metrics=["accuracy", auc])
    h1 = net.head.fit(
        f_train,
        onehot(labels_train),
        validation_data=(f_val, onehot(y_val)),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=_verbose(),
    )
    auc_value = roc_auc(y_val, net.head.predict(f_val, verbose=0)[:, 1])
    log(f"phase 1 (frozen backbone, {len(f_train)} views): validation AUC {auc_value:.4f}")
    return {
        "auc": auc_value,
        "history": {k: [float(x) for x in v] for k, v in h1.history.items()},
        "views": {
            "n": int(len(labels_train)),
            "n_malignant": int(labels_train.sum()),
            "benign_views": benign_views,
            "malignant_views": malignant_views,
        },
        "seconds": {
            "cache_features": round(features_seconds, 1),
            "phase1_head": round(time.time() - started - features_seconds, 1),
        },
    }
