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


def source_weights(counts: dict[str, int]) -> dict[str, float]:
    """Each source's share of a class's picks: proportional to the square root of its images of that class.

    Between drawing every image alike (the largest source, HAM10000, would set the network's idea of a
    lesion) and drawing every source alike (isic2020's 26 training melanomas would be repeated hundreds of
    times an epoch): a source with four times the images gets twice the picks."""
    roots = {source: np.sqrt(n) for source, n in counts.items() if n > 0}
    total = sum(roots.values())
    return {source: float(root / total) for source, root in roots.items()}


def balanced_indices(y: np.ndarray, batch_size: int, seed: int, sources: np.ndarray | None = None):
    """Endless index batches, half benign and half malignant. Within a class, each source's pool is
    reshuffled when used up, and with several sources each pick draws its source first
    (source_weights), so that one source does not drown the others."""
    rng = np.random.default_rng(seed)
    sources = np.zeros(len(y), dtype=int) if sources is None else np.asarray(sources)
    pools = {}
    for c in (0, 1):
        for source in sorted(set(sources[y == c].tolist())):
            pools[c, source] = np.flatnonzero((y == c) & (sources == source))
    weights = {c: source_weights({s: len(p) for (cc, s), p in pools.items() if cc == c}) for c in (0, 1)}
    orders = {key: rng.permutation(pool) for key, pool in pools.items()}
    positions = dict.fromkeys(pools, 0)

    def take(key) -> int:
        if positions[key] == len(orders[key]):
            orders[key], positions[key] = rng.permutation(pools[key]), 0
        positions[key] += 1
        return int(orders[key][positions[key] - 1])

    while True:
        picks = []
        for c, n in ((0, batch_size // 2), (1, batch_size - batch_size // 2)):
            names = list(weights[c])
            chosen = (
                rng.choice(len(names), size=n, p=[weights[c][name] for name in names])
                if len(names) > 1
                else np.zeros(n, dtype=int)
            )
            picks.extend(take((c, names[i])) for i in chosen)
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

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, pool=None, sources=None):
        self.y, self.eye, self.pool = y, np.eye(2, dtype=np.float32), pool
        self.indices, self.seed = balanced_indices(y, batch_size, seed, sources), seed
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
