"""Readers for the on-disk dataset formats -> one list of labelled samples.

Every format is read as it is on disk (the source's own spreadsheet, CSV and
folder layout), so nobody has to rename or re-label files before training:

``original``  the mole-detection challenge: ``CLIN_DIA.xlsx`` (or ``.csv``) with a
              ``kat.Diagnose`` column plus image folders ``SET_D``, ``SET_E``, ``SET_F``.
``ham10000``  ``HAM10000_metadata.csv`` and/or ``ISIC2018_Task3_Test_GroundTruth.csv``
              plus ``images/ISIC_*.jpg``.
``ph2``       ``PH2_dataset.xlsx`` (header row below a legend block) plus
              ``images/IMD*.jpg`` and ``lesion_masks/IMD*_lesion.png``.
``folders``   one folder per class: ``benign/`` and ``malignant/``, or the original
              project's ``benign_train/ malign_train/ benign_test/ malign_test/``.

The target is the same everywhere: 1 = malignant ("needs a doctor"), 0 = benign.
Each sample carries a *group* (the lesion, where the source says which images show
the same lesion) so that splits never put one lesion on both sides.

Nothing is dropped silently: rows with an unusable label, rows without an image and
images without a row are counted in the :class:`DatasetReport`, and commands print
its :meth:`DatasetReport.summary`. Malformed input raises :class:`DatasetError`
naming the file and what is wrong with it.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl

from ml.artifact import CLASS_NAMES

FORMATS = ("original", "ham10000", "ph2", "folders", "manifest")
BENIGN, MALIGNANT = 0, 1

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})

# The folder layout the original project used and prepare_dataset writes:
# folder name (lower case) -> (label, split already decided on disk, or "").
CLASS_FOLDERS = {
    "benign": (BENIGN, ""),
    "malignant": (MALIGNANT, ""),
    "benign_train": (BENIGN, "train"),
    "malign_train": (MALIGNANT, "train"),
    "benign_test": (BENIGN, "test"),
    "malign_test": (MALIGNANT, "test"),
}
# A file name "<group>__<anything>.jpg" in a class folder keeps its group (lesion),
# so a dataset written by prepare_dataset can be split again without leaking lesions.
GROUP_SEPARATOR = "__"

# HAM10000 / ISIC diagnosis codes. scc (ISIC 2019) is listed so that newer ISIC
# metadata reads too; it is malignant like the other carcinomas.
HAM_MALIGNANT = frozenset({"mel", "bcc", "akiec", "scc"})
HAM_BENIGN = frozenset({"nv", "bkl", "df", "vasc"})

PH2_CLASSES = (("Common Nevus", "common_nevus"), ("Atypical Nevus", "atypical_nevus"), ("Melanoma", "melanoma"))

# Original challenge: kat.Diagnose 0 non-melanocytic, 1 benign nevus, 2 dysplastic
# nevus, 3 melanoma. The original project called 2 and 3 malignant (a dysplastic
# nevus needs a doctor) and dropped unknowns ("?").
ORIGINAL_CATEGORIES = {
    0: (BENIGN, "non_melanocytic"),
    1: (BENIGN, "benign_nevus"),
    2: (MALIGNANT, "dysplastic_nevus"),
    3: (MALIGNANT, "melanoma"),
}
ORIGINAL_LABEL_FILES = ("clin_dia.xlsx", "clin_dia.xlsm", "clin_dia.csv")
ORIGINAL_IMAGE_FOLDERS = ("set_d", "set_e", "set_f")

HAM_METADATA = "ham10000_metadata.csv"
ISIC_TEST_TRUTH = "isic2018_task3_test_groundtruth.csv"
PH2_SPREADSHEET = "ph2_dataset.xlsx"
# The plain layout many collections use (and ISIC 2017, 2019, 2020 here): labels.csv with the columns
# image (relative to the CSV's folder), label (benign or malignant); diagnosis and group optional.
MANIFEST_FILE = "labels.csv"
MANIFEST_LABELS = {"benign": BENIGN, "malignant": MALIGNANT}

# How far down a spreadsheet to look for the header row (PH2 has a legend block first).
HEADER_SEARCH_ROWS = 50
EXAMPLES_KEPT = 5


def shared_datasets_root() -> Path:
    """Where the shared, real datasets live: $SKINCARE_DATASETS, else ../shared/datasets
    beside the repository (as in CI). Commands and tests all look here."""
    configured = os.environ.get("SKINCARE_DATASETS")
    return Path(configured) if configured else Path(__file__).resolve().parents[3] / "shared" / "datasets"


class DatasetError(ValueError):
    """A dataset on disk cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Sample:
    path: Path  # the image file
    label: int  # 0 benign, 1 malignant
    group: str  # lesion id (or image id): never split across train/val/test
    source: str  # "original", "ham10000", "isic2018_test", "ph2" or "folders"
    detail: str = ""  # the source's finer class: "mel", "atypical_nevus", "benign_train"...
    mask_path: Path | None = None  # binary lesion mask (PH2), for Grad-CAM checks
    split: str = ""  # "train"/"test" where the layout on disk already decided it


@dataclass
class DatasetReport:
    """What a reader found: the samples and everything it could not use."""

    format: str
    root: Path
    samples: list[Sample]
    dropped_rows: dict[str, int] = field(default_factory=dict)  # reason -> label rows dropped
    rows_without_image: int = 0  # usable label rows whose image file is missing
    images_without_row: int = 0  # image files that no usable label row names
    missing_image_examples: list[str] = field(default_factory=list)
    unlabelled_image_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def label_counts(self) -> dict[str, int]:
        counts = Counter(s.label for s in self.samples)
        return {name: counts.get(label, 0) for label, name in enumerate(CLASS_NAMES)}

    def counts_by(self, attribute: str) -> dict[str, dict[str, int]]:
        """{value of attribute: {"benign": n, "malignant": n}}, e.g. counts_by("detail")."""
        table: dict[str, dict[str, int]] = {}
        for sample in self.samples:
            row = table.setdefault(getattr(sample, attribute), {name: 0 for name in CLASS_NAMES})
            row[CLASS_NAMES[sample.label]] += 1
        return dict(sorted(table.items()))

    def summary(self) -> str:
        counts = self.label_counts
        lines = [
            f"{self.format} dataset at {self.root}: {len(self.samples)} images "
            f"({counts['benign']} benign, {counts['malignant']} malignant) "
            f"in {len({s.group for s in self.samples})} groups"
        ]
        for attribute in ("source", "detail", "split"):
            table = self.counts_by(attribute)
            if len(table) > 1 or (attribute == "detail" and "" not in table):
                parts = [f"{value or '-'} {_label_mix(row)}" for value, row in table.items()]
                lines.append(f"  by {attribute}: " + ", ".join(parts))
        for reason, count in sorted(self.dropped_rows.items()):
            lines.append(f"  dropped {count} label row(s): {reason}")
        if self.rows_without_image:
            lines.append(
                f"  {self.rows_without_image} label row(s) have no image file"
                + _examples(self.missing_image_examples, self.rows_without_image)
            )
        if self.images_without_row:
            lines.append(
                f"  {self.images_without_row} image file(s) have no usable label row"
                + _examples(self.unlabelled_image_examples, self.images_without_row)
            )
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _label_mix(row: dict[str, int]) -> str:
    """'80 (malignant)', '80 (benign)' or '80 (70 benign, 10 malignant)'."""
    total = row["benign"] + row["malignant"]
    if not row["malignant"]:
        return f"{total} (benign)"
    if not row["benign"]:
        return f"{total} (malignant)"
    return f"{total} ({row['benign']} benign, {row['malignant']} malignant)"


def _examples(examples: Sequence[str], total: int) -> str:
    if not examples:
        return ""
    more = ", ..." if total > len(examples) else ""
    return " (e.g. " + ", ".join(examples) + more + ")"


# --------------------------------------------------------------------------- detection


def _listing(root: Path) -> dict[str, Path]:
    """Entries directly under root by lower-case name: formats match names without case."""
    return {entry.name.lower(): entry for entry in sorted(root.iterdir())}


def detect_format(root: str | Path) -> str:
    """Which of FORMATS the folder holds, from the files and folders directly in it."""
    root = _check_root(root)
    names = _listing(root)
    found = []
    folders = {name for name, path in names.items() if path.is_dir()}
    if any(n in names for n in ORIGINAL_LABEL_FILES) or folders & set(ORIGINAL_IMAGE_FOLDERS):
        found.append("original")
    if HAM_METADATA in names or ISIC_TEST_TRUTH in names:
        found.append("ham10000")
    if PH2_SPREADSHEET in names:
        found.append("ph2")
    if folders & set(CLASS_FOLDERS):
        found.append("folders")
    if MANIFEST_FILE in names and names[MANIFEST_FILE].is_file():
        found.append("manifest")
    if len(found) == 1:
        return found[0]
    if found:
        raise DatasetError(f"{root}: looks like more than one format ({', '.join(found)}); pass format= to choose")
    raise DatasetError(
        f"{root}: not a dataset format I know. Known formats: "
        "original (CLIN_DIA.xlsx or .csv with kat.Diagnose + SET_D/SET_E/SET_F image folders), "
        "ham10000 (HAM10000_metadata.csv and/or ISIC2018_Task3_Test_GroundTruth.csv + images/ISIC_*.jpg), "
        "ph2 (PH2_dataset.xlsx + images/IMD*.jpg), "
        "folders (benign/ and malignant/, or benign_train/ malign_train/ benign_test/ malign_test/), "
        "manifest (labels.csv with the columns image and label, benign or malignant; diagnosis and group optional)"
    )


def _check_root(root: str | Path) -> Path:
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    return root


def read_dataset(root: str | Path, format: str | None = None, *, atypical_is_malignant: bool = False) -> DatasetReport:
    """Read the dataset under root. The format is detected unless given.

    atypical_is_malignant (PH2 only; other formats ignore it): count atypical nevi as
    malignant, the original challenge's convention where a dysplastic nevus needs a
    doctor. By default only melanoma is malignant.
    """
    root = _check_root(root)
    if format is None:
        format = detect_format(root)
    if format == "original":
        return read_original(root)
    if format == "ham10000":
        return read_ham10000(root)
    if format == "ph2":
        return read_ph2(root, atypical_is_malignant=atypical_is_malignant)
    if format == "folders":
        return read_folders(root)
    if format == "manifest":
        return read_manifest(root)
    raise DatasetError(f"unknown dataset format {format!r}; known formats: {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- tables


def _cell_text(value) -> str:
    """A spreadsheet or CSV cell as stripped text; 3.0 from Excel reads as '3'."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV or the first sheet of an .xlsx as (1-based row number,
    cells as text); the numbers let messages point at the row a person sees."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        rows = _read_xlsx_rows(path)
    elif suffix in (".csv", ".txt"):
        rows = _read_csv_rows(path)
    else:
        raise DatasetError(f"{path}: cannot read {suffix or 'extension-less'} files; save it as .xlsx or .csv")
    rows = [(number, row) for number, row in enumerate(rows, start=1) if any(row)]
    if not rows:
        raise DatasetError(f"{path}: file has no rows")
    return rows


def _read_xlsx_rows(path: Path) -> list[list[str]]:
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError, InvalidFileException...
        raise DatasetError(f"{path}: not a readable Excel workbook ({type(exc).__name__}: {exc})") from exc
    try:
        sheet = workbook.worksheets[0] if workbook.worksheets else None
        if sheet is None:
            raise DatasetError(f"{path}: workbook has no sheets")
        return [[_cell_text(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()


def _read_csv_rows(path: Path) -> list[list[str]]:
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise DatasetError(f"{path}: not a text CSV file (it contains binary data)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")  # Excel's "CSV" on German/Western Windows
    first_line = text.split("\n", 1)[0]
    # Excel in German locales writes ';'-separated CSV; take whichever separator the header uses most.
    delimiter = max((",", ";", "\t"), key=first_line.count)
    try:
        return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text), delimiter=delimiter)]
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from exc


@dataclass
class _Table:
    path: Path
    header: list[str]
    rows: list[list[str]]  # data rows, each padded to the header's length
    row_numbers: list[int]  # 1-based row in the file of each data row, for messages

    def column(self, name: str) -> int:
        """Index of a column, matched without regard to case or surrounding space."""
        wanted = _normalise_header(name)
        for index, header in enumerate(self.header):
            if _normalise_header(header) == wanted:
                return index
        raise DatasetError(
            f"{self.path}: no {name!r} column (columns: {', '.join(h for h in self.header if h) or 'none'})"
        )

    def has_column(self, name: str) -> bool:
        return any(_normalise_header(h) == _normalise_header(name) for h in self.header)


def _normalise_header(text: str) -> str:
    return " ".join(text.split()).lower()


def _read_table(path: Path, first_column: str) -> _Table:
    """Read a table whose header row is the first one holding first_column.

    Looking for the header instead of assuming row 1 reads spreadsheets with a
    legend block above the table (PH2) exactly like plain ones.
    """
    rows = _read_rows(path)
    wanted = _normalise_header(first_column)
    for index, (_, row) in enumerate(rows[:HEADER_SEARCH_ROWS]):  # noqa: B007 (index is read after the loop)
        if any(_normalise_header(cell) == wanted for cell in row):
            header = row
            break
    else:
        raise DatasetError(
            f"{path}: no header row with an {first_column!r} column in the first "
            f"{HEADER_SEARCH_ROWS} rows (first row: {', '.join(c for c in rows[0][1] if c)[:200]})"
        )
    width = len(header)
    data = [(row + [""] * width)[:width] for _, row in rows[index + 1 :]]
    if not data:
        raise DatasetError(f"{path}: header row but no data rows")
    return _Table(path=path, header=header, rows=data, row_numbers=[number for number, _ in rows[index + 1 :]])


# --------------------------------------------------------------------------- images


def _image_files(folder: Path) -> Iterable[Path]:
    """Image files under folder, recursively and through symlinked folders (big image
    sets are often linked in), in a stable order; hidden files and folders skipped."""
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                yield Path(directory) / name


def _index_images(paths: Iterable[Path], pattern: str, where: Path) -> dict[str, Path]:
    """{lower-case stem: path} of the files whose stem matches pattern (case-insensitive)."""
    regex = re.compile(pattern, re.IGNORECASE)
    index: dict[str, Path] = {}
    for path in paths:
        if not regex.fullmatch(path.stem):
            continue
        key = path.stem.lower()
        if key in index:
            raise DatasetError(
                f"{where}: two image files for {path.stem!r}: {index[key].relative_to(where)} and "
                f"{path.relative_to(where)}; remove one"
            )
        index[key] = path
    return index


def _match(report: DatasetReport, wanted: dict[str, tuple], images: dict[str, Path], make_sample) -> None:
    """Pair label rows (key -> row data) with images (key -> path) and count the leftovers."""
    for key, row in wanted.items():
        path = images.get(key)
        if path is None:
            report.rows_without_image += 1
            if len(report.missing_image_examples) < EXAMPLES_KEPT:
                report.missing_image_examples.append(key)
            continue
        report.samples.append(make_sample(path, *row))
    for key, path in images.items():
        if key not in wanted:
            report.images_without_row += 1
            if len(report.unlabelled_image_examples) < EXAMPLES_KEPT:
                report.unlabelled_image_examples.append(str(path.relative_to(report.root)))


def _drop(report: DatasetReport, reason: str) -> None:
    report.dropped_rows[reason] = report.dropped_rows.get(reason, 0) + 1


# --------------------------------------------------------------------------- formats


def read_original(root: str | Path) -> DatasetReport:
    """The original challenge: CLIN_DIA.xlsx (kat.Diagnose) + SET_D/SET_E/SET_F/*.BMP."""
    root = _check_root(root)
    names = _listing(root)
    label_file = next((names[n] for n in ORIGINAL_LABEL_FILES if n in names), None)
    if label_file is None:
        raise DatasetError(f"{root}: no CLIN_DIA.xlsx or CLIN_DIA.csv label file")
    folders = [names[n] for n in ORIGINAL_IMAGE_FOLDERS if n in names and names[n].is_dir()]
    if not folders:
        raise DatasetError(f"{root}: no SET_D, SET_E or SET_F image folder")

    table = _read_table(label_file, "id")
    id_col, category_col = table.column("id"), table.column("kat.Diagnose")
    report = DatasetReport(format="original", root=root, samples=[])
    wanted: dict[str, tuple] = {}
    for offset, row in enumerate(table.rows):
        image_id, category = row[id_col].lower(), row[category_col]
        if not image_id:
            _drop(report, "no id")
        elif category == "?":
            _drop(report, "kat.Diagnose '?' (unknown)")
        elif category == "":
            _drop(report, "kat.Diagnose missing")
        elif image_id in wanted:
            _drop(report, "id repeated")
        elif not category.isdigit() or int(category) not in ORIGINAL_CATEGORIES:
            raise DatasetError(
                f"{label_file}: row {table.row_numbers[offset]} (id {image_id}): kat.Diagnose is "
                f"{category!r}; expected 0, 1, 2, 3 or '?'"
            )
        else:
            wanted[image_id] = ORIGINAL_CATEGORIES[int(category)]

    images = {}
    for folder in folders:
        images.update(_index_images(_image_files(folder), r"[a-z]\d+", root))

    def make(path, label, detail):
        return Sample(path=path, label=label, group=path.stem.lower(), source="original", detail=detail)

    _match(report, wanted, images, make)
    return report


def read_ham10000(root: str | Path) -> DatasetReport:
    """HAM10000_metadata.csv (grouped by lesion_id) and/or the ISIC 2018 test ground truth."""
    root = _check_root(root)
    names = _listing(root)
    if HAM_METADATA not in names and ISIC_TEST_TRUTH not in names:
        raise DatasetError(f"{root}: neither HAM10000_metadata.csv nor ISIC2018_Task3_Test_GroundTruth.csv")
    report = DatasetReport(format="ham10000", root=root, samples=[])
    wanted: dict[str, tuple] = {}  # image id -> (label, group, source, detail)

    def want(image_id: str, entry: tuple, path: Path) -> None:
        if image_id in wanted:
            raise DatasetError(f"{path}: image {image_id} is listed twice (or also in the other CSV)")
        wanted[image_id] = entry

    if HAM_METADATA in names:
        table = _read_table(names[HAM_METADATA], "image_id")
        image_col, dx_col, lesion_col = table.column("image_id"), table.column("dx"), table.column("lesion_id")
        for offset, row in enumerate(table.rows):
            image_id, dx, lesion = row[image_col].lower(), row[dx_col].lower(), row[lesion_col]
            if not image_id:
                _drop(report, "no image_id")
                continue
            if not dx:
                _drop(report, "dx missing")
                continue
            label = _ham_label(dx, f"{table.path}: row {table.row_numbers[offset]} ({row[image_col]})")
            want(image_id, (label, lesion or row[image_col], "ham10000", dx), table.path)

    if ISIC_TEST_TRUTH in names:
        table = _read_table(names[ISIC_TEST_TRUTH], "image")
        image_col = table.column("image")
        class_cols = [(i, h.strip().lower()) for i, h in enumerate(table.header) if i != image_col and h.strip()]
        if not class_cols:
            raise DatasetError(f"{table.path}: no diagnosis columns (expected MEL, NV, BCC, AKIEC, BKL, DF, VASC)")
        for index, dx in class_cols:
            _ham_label(dx, f"{table.path}: column {table.header[index]!r}")
        for offset, row in enumerate(table.rows):
            image_id = row[image_col]
            where = f"{table.path}: row {table.row_numbers[offset]} ({image_id})"
            if not image_id:
                _drop(report, "no image")
                continue
            try:
                hot = [dx for index, dx in class_cols if float(row[index] or 0) == 1.0]
            except ValueError:
                raise DatasetError(f"{where}: diagnosis columns must hold 0 or 1") from None
            if len(hot) != 1:
                if not hot:
                    _drop(report, "no diagnosis marked")
                    continue
                raise DatasetError(f"{where}: more than one diagnosis marked ({', '.join(hot)})")
            dx = hot[0]
            # The test set has no lesion ids: each image is its own group.
            want(image_id.lower(), (_ham_label(dx, where), image_id, "isic2018_test", dx), table.path)

    images = _index_images(_image_files(root), r"ISIC_\d+", root)
    if not images:
        raise DatasetError(f"{root}: no ISIC_*.jpg images found (expected them in {root / 'images'})")

    def make(path, label, group, source, detail):
        return Sample(path=path, label=label, group=group, source=source, detail=detail)

    _match(report, wanted, images, make)
    return report


def _ham_label(dx: str, where: str) -> int:
    if dx in HAM_MALIGNANT:
        return MALIGNANT
    if dx in HAM_BENIGN:
        return BENIGN
    known = ", ".join(sorted(HAM_MALIGNANT | HAM_BENIGN))
    raise DatasetError(f"{where}: unknown diagnosis {dx!r} (known: {known})")


def read_ph2(root: str | Path, *, atypical_is_malignant: bool = False) -> DatasetReport:
    """PH2_dataset.xlsx ('X' under Common Nevus / Atypical Nevus / Melanoma) + IMD*.jpg."""
    root = _check_root(root)
    names = _listing(root)
    if PH2_SPREADSHEET not in names:
        raise DatasetError(f"{root}: no PH2_dataset.xlsx")
    table = _read_table(names[PH2_SPREADSHEET], "Image Name")
    name_col = table.column("Image Name")
    class_cols = [(table.column(column), detail) for column, detail in PH2_CLASSES]
    malignant_details = {"melanoma", "atypical_nevus"} if atypical_is_malignant else {"melanoma"}

    report = DatasetReport(format="ph2", root=root, samples=[])
    if atypical_is_malignant:
        report.notes.append("atypical nevi counted as malignant")
    wanted: dict[str, tuple] = {}
    for offset, row in enumerate(table.rows):
        name = row[name_col]
        marked = [detail for index, detail in class_cols if row[index].upper() == "X"]
        if not name:
            if marked:
                _drop(report, "no Image Name")
            continue  # blank rows under the table
        where = f"{table.path}: row {table.row_numbers[offset]} ({name})"
        if len(marked) > 1:
            raise DatasetError(f"{where}: more than one clinical diagnosis marked ({', '.join(marked)})")
        if not marked:
            _drop(report, "no clinical diagnosis marked")
            continue
        if name.lower() in wanted:
            raise DatasetError(f"{where}: image listed twice")
        detail = marked[0]
        wanted[name.lower()] = (int(detail in malignant_details), name, detail)

    files = list(_image_files(root))
    images = _index_images(files, r"IMD\d+", root)
    masks = _index_images(files, r"IMD\d+_lesion", root)
    if not images:
        raise DatasetError(f"{root}: no IMD*.jpg images found (expected them in {root / 'images'})")

    def make(path, label, name, detail):
        mask = masks.get(path.stem.lower() + "_lesion")
        return Sample(path=path, label=label, group=name, source="ph2", detail=detail, mask_path=mask)

    _match(report, wanted, images, make)
    missing_masks = sum(1 for s in report.samples if s.mask_path is None)
    if missing_masks:
        report.notes.append(f"{missing_masks} image(s) have no lesion mask")
    return report


def read_folders(root: str | Path) -> DatasetReport:
    """One folder per class: benign/ + malignant/, or benign_train/ malign_train/ benign_test/ malign_test/."""
    root = _check_root(root)
    folders = {name: path for name, path in _listing(root).items() if name in CLASS_FOLDERS and path.is_dir()}
    if not folders:
        raise DatasetError(
            f"{root}: no class folders; expected benign/ and malignant/, or "
            "benign_train/ malign_train/ benign_test/ malign_test/"
        )
    layouts = {"plain" if not CLASS_FOLDERS[name][1] else "split" for name in folders}
    if len(layouts) > 1:
        raise DatasetError(
            f"{root}: has both benign/malignant and *_train/*_test folders ({', '.join(sorted(folders))}); keep one layout"
        )
    report = DatasetReport(format="folders", root=root, samples=[])
    for name, folder in sorted(folders.items()):
        label, split = CLASS_FOLDERS[name]
        for path in _image_files(folder):
            group = path.stem.split(GROUP_SEPARATOR, 1)[0] if GROUP_SEPARATOR in path.stem else path.stem
            report.samples.append(
                Sample(path=path, label=label, group=group, source="folders", detail=name, split=split)
            )
    if not report.samples:
        raise DatasetError(f"{root}: the class folders ({', '.join(sorted(folders))}) hold no images")
    for label, class_name in enumerate(CLASS_NAMES):
        if not any(s.label == label for s in report.samples):
            report.notes.append(f"no {class_name} images")
    return report


# --------------------------------------------------------------------------- writing


def read_manifest(root: str | Path) -> DatasetReport:
    """labels.csv (image, label; diagnosis and group optional; other columns ignored) + the images it names.

    `image` is a path relative to the CSV's folder; `label` is benign or malignant; `group` is the unit a
    split must keep whole (a lesion or a patient), the image itself where empty. The source of every
    sample is the folder's name, e.g. "isic2017"."""
    root = _check_root(root)
    path = _listing(root).get(MANIFEST_FILE)
    if path is None or not path.is_file():
        raise DatasetError(f"{root}: no {MANIFEST_FILE}")
    table = _read_table(path, "image")
    image_col, label_col = table.column("image"), table.column("label")
    diagnosis_col = table.column("diagnosis") if table.has_column("diagnosis") else None
    group_col = table.column("group") if table.has_column("group") else None
    report = DatasetReport(format="manifest", root=root, samples=[])
    source = root.name.lower()
    wanted: dict[str, tuple] = {}
    row_of: dict[str, int] = {}
    for number, row in zip(table.row_numbers, table.rows):
        where = f"{path}, row {number}"
        name, label_text = row[image_col], row[label_col].lower()
        if not name:
            raise DatasetError(f"{where}: no image named in the 'image' column")
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise DatasetError(f"{where}: image {name!r} must be a path inside {root} (relative, without '..')")
        if label_text not in MANIFEST_LABELS:
            raise DatasetError(f"{where}: label {row[label_col]!r} is not benign or malignant")
        key = relative.as_posix().lower()
        if key in row_of:
            raise DatasetError(f"{where}: image {name!r} is listed twice (first on row {row_of[key]})")
        row_of[key] = number
        group = (row[group_col] if group_col is not None else "") or relative.stem
        diagnosis = row[diagnosis_col] if diagnosis_col is not None else ""
        wanted[key] = (MANIFEST_LABELS[label_text], group, diagnosis)
    images = {p.relative_to(root).as_posix().lower(): p for p in _image_files(root)}

    def make_sample(image_path: Path, label: int, group: str, diagnosis: str) -> Sample:
        return Sample(path=image_path, label=label, group=f"{source}:{group}", source=source, detail=diagnosis)

    _match(report, wanted, images, make_sample)
    if not report.samples:
        raise DatasetError(f"{path}: none of its {len(wanted)} images were found under {root}")
    return report
