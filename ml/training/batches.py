"""Balanced, augmented training batches, drawn ahead of the training step by a pool of processes.

The original project balanced its classes with an augmenting generator; this is that generator,
in NumPy (ml.model.augmentation), so that it feeds Keras on every backend.
"""
from __future__ import annotations

import multiprocessing
import os

import numpy as np

from ml.model.augmentation import augment

_POOL_IMAGES: np.ndarray | None = None


def _set_pool_images(images):
    global _POOL_IMAGES
    _POOL_IMAGES = images


def _augmented_batch(indices, seed: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.clip(np.rint(augment(_POOL_IMAGES[i], rng)), 0, 255).astype(np.uint8) for i in indices])


def augmented_views(images: np.ndarray, seed: int) -> np.ndarray:
    """One augmented view of each image (uint8), in this process, reproducible from the seed."""
    _set_pool_images(images)
    return _augmented_batch(np.arange(len(images)), (seed, 0))


def balanced_indices(y: np.ndarray, batch_size: int, seed: int):
    """Endless index batches, half benign and half malignant, each class reshuffled when used up."""
    rng = np.random.default_rng(seed)
    pools = [np.flatnonzero(y == c) for c in (0, 1)]
    orders, positions = [rng.permutation(p) for p in pools], [0, 0]
    while True:
        picks = []
        for c, n in ((0, batch_size // 2), (1, batch_size - batch_size // 2)):
            take: list[int] = []
            while len(take) < n:
                if positions[c] == len(orders[c]):
                    orders[c], positions[c] = rng.permutation(pools[c]), 0
                k = min(n - len(take), len(orders[c]) - positions[c])
                take.extend(orders[c][positions[c]:positions[c] + k])
                positions[c] += k
            picks.extend(take)
        yield rng.permutation(np.array(picks))


def augmentation_pool(x: np.ndarray, workers: int | None = None):
    """Processes that hold the training images (forked, so shared rather than copied), or None to
    augment in this process (workers=0, or where processes are not forked). Start it before the
    first training step: forking a process that already runs JAX's or TensorFlow's threads can deadlock."""
    workers = max(1, min(16, (os.cpu_count() or 2) - 1)) if workers is None else workers
    if not workers or multiprocessing.get_start_method(allow_none=True) not in (None, "fork"):
        return None
    return multiprocessing.get_context("fork").Pool(workers, initializer=_set_pool_images, initargs=(x,))


class AugmentedBatches:
    """Iterating yields (images float32 0..255, one-hot labels): balanced batches, every image
    augmented afresh, computed a few batches ahead by an augmentation_pool (or, without one, here)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, pool=None):
        self.y, self.eye, self.pool = y, np.eye(2, dtype=np.float32), pool
        self.indices, self.seed = balanced_indices(y, batch_size, seed), seed
        self.ahead = 2 * pool._processes if pool is not None else 1
        if pool is None:
            _set_pool_images(x)
        self.pending: list[tuple[np.ndarray, object]] = []
        self.count = 0

    def _submit(self):
        idx = next(self.indices)
        seed = (self.seed, self.count + 1)  # each batch's own stream, whichever process draws it
        job = self.pool.apply_async(_augmented_batch, (idx, seed)) if self.pool else _augmented_batch(idx, seed)
        self.pending.append((idx, job))
        self.count += 1

    def __iter__(self):
        return self

    def __next__(self):
        while len(self.pending) < self.ahead:
            self._submit()
        idx, job = self.pending.pop(0)
        images = job.get(timeout=300) if self.pool else job  # a stuck worker fails the run, never hangs it
        return images.astype(np.float32), self.eye[self.y[idx]]

    def generator(self):
        """The batches as a generator, the form Keras's fit takes them in on every backend."""
        while True:
            yield next(self)
