"""The four-folder export of a dataset (`manage.py prepare_dataset`): benign_train, malign_train,
benign_test, malign_test, the layout of the original project, with a manifest of where each file
came from. The split is grouped and stratified (ml.data.splits.split_samples)."""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ml.artifact import CLASS_NAMES
from ml.data.datasets import BENIGN, GROUP_SEPARATOR, DatasetError, DatasetReport, Sample
from ml.data.splits import split_samples
from ml.preprocessing import load_rgb, resize_rgb


@dataclass
class PreparedDataset:
    """What write_split_folders wrote: images per folder, and the images it could not read."""

    dest: Path
    counts: dict[str, int]  # folder name -> images written
    skipped: list[tuple[Path, str]]  # unreadable source image, reason

    def summary(self) -> str:
        lines = [f"wrote {sum(self.counts.values())} images to {self.dest}:"]
        lines += [f"  {name}/: {count}" for name, count in self.counts.items()]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable image(s):")
            lines += [f"    {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


SPLIT_FOLDERS = ("benign_train", "malign_train", "benign_test", "malign_test")
MANIFEST_NAME = "manifest.csv"


def write_split_folders(
    report: DatasetReport,
    dest: str | Path,
    *,
    test_fraction: float = 0.2,
    seed: int = 42,
    force: bool = False,
    progress=None,
) -> PreparedDataset:
    """Write report's samples as the original project's four folders of 224x224 RGB JPEGs.

    The split is grouped and stratified (ml.data.splits.split_samples). A file keeps its
    group in its name ("<group>__<image>.jpg") so read_folders can split it again
    without putting one lesion on two sides. manifest.csv maps every written file to
    its source image. Everything is written to a hidden staging folder first and moved
    into place at the end, so a failure leaves DEST as it was; with force, only the
    four folders and manifest.csv in DEST are replaced. progress(done, total) is
    called every few hundred images.
    """

    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test fraction must be between 0 and 1, got {test_fraction}")
    dest = Path(dest).expanduser().absolute()
    source_root = report.root.absolute()
    if dest == source_root or source_root in dest.parents or dest in source_root.parents:
        raise DatasetError(
            f"{dest}: the destination must be outside the source dataset {source_root} and not contain it"
        )
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"{dest}: exists and is not a folder")
    if dest.exists() and any(dest.iterdir()) and not force:
        raise DatasetError(
            f"{dest}: not empty; use --force (force=True) to replace its {', '.join(SPLIT_FOLDERS)} folders"
        )
    if not report.samples:
        raise DatasetError(f"{report.root}: no samples to write")

    train, test = split_samples(report.samples, (1.0 - test_fraction, test_fraction), seed=seed)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=dest))
    counts = {name: 0 for name in SPLIT_FOLDERS}
    skipped: list[tuple[Path, str]] = []
    used_names: set[str] = set()
    total, done = len(train) + len(test), 0
    try:
        for name in SPLIT_FOLDERS:
            (staging / name).mkdir()
        with open(staging / MANIFEST_NAME, "w", newline="") as manifest_file:
            manifest = csv.writer(manifest_file)
            manifest.writerow(["file", "source_path", "label", "group", "source", "detail"])
            for split, samples in (("train", train), ("test", test)):
                for sample in samples:
                    folder = f"{'benign' if sample.label == BENIGN else 'malign'}_{split}"
                    try:
                        image = resize_rgb(load_rgb(sample.path))
                    except (OSError, ValueError, Image.DecompressionBombError) as exc:
                        skipped.append((sample.path, f"{type(exc).__name__}: {exc}"))
                        continue
                    file_name = _output_name(sample, used_names)
                    image.save(staging / folder / file_name, "JPEG", quality=95)
                    manifest.writerow(
                        [
                            f"{folder}/{file_name}",
                            str(sample.path),
                            CLASS_NAMES[sample.label],
                            sample.group,
                            sample.source,
                            sample.detail,
                        ]
                    )
                    counts[folder] += 1
                    done += 1
                    if progress and done % 500 == 0:
                        progress(done, total)
        for name in (*SPLIT_FOLDERS, MANIFEST_NAME):
            target = dest / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            (staging / name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PreparedDataset(dest=dest, counts=counts, skipped=skipped)


def _output_name(sample: Sample, used: set[str]) -> str:
    """'<group>__<stem>.jpg' (just '<stem>.jpg' where the image is its own group), unique."""
    safe = lambda text: re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"  # noqa: E731
    stem = safe(sample.path.stem)
    group = safe(sample.group)
    if group.lower() == stem.lower() or stem.lower().startswith((group + GROUP_SEPARATOR).lower()):
        base = stem
    else:
        base = f"{group}{GROUP_SEPARATOR}{stem}"
    name, n = f"{base}.jpg", 1
    while name.lower() in used:
        n += 1
        name = f"{base}_{n}.jpg"
    used.add(name.lower())
    return name
