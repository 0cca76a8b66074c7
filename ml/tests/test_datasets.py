"""Dataset readers, splits and prepare_dataset, on the real shared files where they exist.

Counts come from the shared datasets' README; malformed inputs are small files
written to tmp_path, so every error message a user can meet is checked once.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from pathlib import Path

import openpyxl
import pytest
from PIL import Image

from ml.data.datasets import (
    FORMATS,
    DatasetError,
    Sample,
    detect_format,
    read_dataset,
    read_folders,
)
from ml.data.folders import write_split_folders
from ml.data.splits import split_samples


def write_image(path: Path, colour=(200, 120, 90), size=(40, 30), format=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=format)
    return path


def write_xlsx(path: Path, rows) -> Path:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(list(row))
    workbook.save(path)
    return path


PH2_LEGEND = [
    [None] * 5,
    [None, None, None, None, None, "Legends"],
    [None, None, None, None, None, "Asymmetry", 0, "Fully Simmetric"],
    [None, None, "Clinical Diagnosis"],
]
PH2_HEADER = [
    "Image Name",
    "Histological Diagnosis",
    "Common Nevus",
    "Atypical Nevus",
    "Melanoma",
    "Asymmetry\n(0/1/2)",
]


# --------------------------------------------------------------------------- original (becode)


def test_becode_sample_reads_3000_rows_and_matches_10_images(becode_root):
    report = read_dataset(becode_root)
    assert report.format == "original"
    assert len(report.samples) == 10
    assert report.label_counts == {"benign": 9, "malignant": 1}
    assert report.dropped_rows == {"kat.Diagnose '?' (unknown)": 1}
    assert report.rows_without_image == 2989
    assert len(report.samples) + sum(report.dropped_rows.values()) + report.rows_without_image == 3000
    assert report.images_without_row == 0
    # ids are lower case ("d72"), file names upper case ("D72.BMP").
    d72 = next(s for s in report.samples if s.group == "d72")
    assert d72.path.name == "D72.BMP" and d72.path.parent.name == "SET_D"
    assert (d72.label, d72.detail, d72.source) == (1, "dysplastic_nevus", "original")
    summary = report.summary()
    assert "dropped 1 label row(s): kat.Diagnose '?' (unknown)" in summary
    assert "2989 label row(s) have no image file" in summary


def test_original_format_from_csv_matches_ids_without_case_and_counts_leftovers(tmp_path):
    (tmp_path / "CLIN_DIA.csv").write_text(
        "klin. Diagn.;id;nr;kat.Diagnose\nNävus;d1;1;1\nMelanom;D2;2;3\nX;e7;7;0\nY;e8;8;\nZ;f1;1;?\n",
        encoding="cp1252",  # what Excel writes for a German "CSV (;)" export
    )
    write_image(tmp_path / "set_d" / "D1.bmp", format="BMP")
    write_image(tmp_path / "set_d" / "d2.Bmp", format="BMP")
    write_image(tmp_path / "set_d" / "D99.BMP", format="BMP")  # no row
    write_image(tmp_path / "set_f" / "F1.BMP", format="BMP")  # its row is '?'
    report = read_dataset(tmp_path)
    assert report.format == "original"
    assert sorted((s.group, s.label, s.detail) for s in report.samples) == [
        ("d1", 0, "benign_nevus"),
        ("d2", 1, "melanoma"),
    ]
    assert report.dropped_rows == {"kat.Diagnose '?' (unknown)": 1, "kat.Diagnose missing": 1}
    assert report.rows_without_image == 1  # e7
    assert report.missing_image_examples == ["e7"]
    assert report.images_without_row == 2  # D99 and F1
    assert "2 image file(s) have no usable label row" in report.summary()


def test_original_format_refuses_an_unknown_category(tmp_path):
    (tmp_path / "CLIN_DIA.csv").write_text("id,kat.Diagnose\nd1,1\n\nd2,7\n")  # blank line 3
    write_image(tmp_path / "SET_D" / "D1.BMP")
    with pytest.raises(DatasetError, match=r"CLIN_DIA.csv: row 4 \(id d2\): kat.Diagnose is '7'"):
        read_dataset(tmp_path)


def test_original_format_without_image_folders(tmp_path):
    (tmp_path / "CLIN_DIA.csv").write_text("id,kat.Diagnose\nd1,1\n")
    with pytest.raises(DatasetError, match="no SET_D, SET_E or SET_F image folder"):
        read_dataset(tmp_path)


def test_original_format_without_label_file(tmp_path):
    write_image(tmp_path / "SET_D" / "D1.BMP")
    with pytest.raises(DatasetError, match="no CLIN_DIA.xlsx or CLIN_DIA.csv label file"):
        read_dataset(tmp_path)


def test_original_format_label_file_without_kat_diagnose(tmp_path):
    write_xlsx(tmp_path / "CLIN_DIA.xlsx", [["klin. Diagn.", "id", "nr"], ["Nävus", "d1", 1]])
    write_image(tmp_path / "SET_D" / "D1.BMP")
    with pytest.raises(
        DatasetError, match=r"CLIN_DIA.xlsx: no 'kat.Diagnose' column \(columns: klin. Diagn., id, nr\)"
    ):
        read_dataset(tmp_path)


# --------------------------------------------------------------------------- HAM10000 / ISIC 2018


@pytest.fixture(scope="module")
def ham_report(ham10000_root):
    return read_dataset(ham10000_root)


def test_ham10000_counts_with_the_isic_2018_test_set(ham_report):
    assert ham_report.format == "ham10000"
    assert len(ham_report.samples) == 7496
    assert ham_report.label_counts == {"benign": 6251, "malignant": 1245}
    assert Counter(s.source for s in ham_report.samples) == {"ham10000": 5984, "isic2018_test": 1512}
    assert ham_report.rows_without_image == ham_report.images_without_row == 0
    assert not ham_report.dropped_rows


def test_ham10000_labels_and_groups(ham_report):
    by_detail = ham_report.counts_by("detail")
    assert {dx for dx, row in by_detail.items() if row["malignant"]} == {"mel", "bcc", "akiec"}
    assert all(not row["benign"] for dx, row in by_detail.items() if dx in {"mel", "bcc", "akiec"})
    ham = [s for s in ham_report.samples if s.source == "ham10000"]
    assert all(s.group.startswith("HAM_") for s in ham)  # grouped by lesion_id
    test = [s for s in ham_report.samples if s.source == "isic2018_test"]
    assert all(s.group == s.path.stem for s in test)  # no lesion ids: grouped by image
    first = next(s for s in ham if s.path.stem == "ISIC_0027419")
    assert (first.group, first.detail, first.label) == ("HAM_0000118", "bkl", 0)


def test_ham10000_split_keeps_lesions_together_and_stratifies(ham_report):
    samples = ham_report.samples
    train, val, test = split_samples(samples, (0.7, 0.15, 0.15), seed=42)
    assert len(train) + len(val) + len(test) == len(samples)
    groups = [{s.group for s in part} for part in (train, val, test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    overall = sum(s.label for s in samples) / len(samples)
    for part, fraction in zip((train, val, test), (0.7, 0.15, 0.15)):
        assert abs(len(part) / len(samples) - fraction) < 0.01
        assert abs(sum(s.label for s in part) / len(part) - overall) < 0.02
    # Deterministic for a seed, whatever the input order; another seed differs.
    shuffled = list(samples)
    random.Random(1).shuffle(shuffled)
    again = split_samples(shuffled, (0.7, 0.15, 0.15), seed=42)
    assert [{s.path for s in part} for part in again] == [{s.path for s in part} for part in (train, val, test)]
    other = split_samples(samples, (0.7, 0.15, 0.15), seed=7)
    assert {s.path for s in other[2]} != {s.path for s in test}


def test_ham10000_metadata_only_counts_the_unlisted_test_images(ham10000_root, tmp_path):
    (tmp_path / "HAM10000_metadata.csv").write_bytes((ham10000_root / "HAM10000_metadata.csv").read_bytes())
    (tmp_path / "images").symlink_to(ham10000_root / "images")  # linked, not copied
    report = read_dataset(tmp_path)
    assert len(report.samples) == 5984
    assert report.images_without_row == 1512


def test_ham10000_metadata_with_an_empty_lesion_id_groups_by_image(tmp_path):
    (tmp_path / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx\nHAM_1,ISIC_0000001,mel\nHAM_1,ISIC_0000002,mel\n,ISIC_0000003,nv\n,ISIC_0000004,\n"
    )
    for n in (1, 2, 3):
        write_image(tmp_path / "images" / f"ISIC_000000{n}.jpg")
    report = read_dataset(tmp_path)
    assert sorted((s.path.stem, s.group, s.label) for s in report.samples) == [
        ("ISIC_0000001", "HAM_1", 1),
        ("ISIC_0000002", "HAM_1", 1),
        ("ISIC_0000003", "ISIC_0000003", 0),
    ]
    assert report.dropped_rows == {"dx missing": 1}


def test_ham10000_errors_name_the_file_and_problem(tmp_path):
    metadata = tmp_path / "HAM10000_metadata.csv"
    write_image(tmp_path / "images" / "ISIC_0000001.jpg")
    metadata.write_text("lesion_id,image_id,diagnosis\nHAM_1,ISIC_0000001,mel\n")
    with pytest.raises(
        DatasetError, match=r"HAM10000_metadata.csv: no 'dx' column \(columns: lesion_id, image_id, diagnosis\)"
    ):
        read_dataset(tmp_path)
    metadata.write_text("")
    with pytest.raises(DatasetError, match="HAM10000_metadata.csv: file is empty"):
        read_dataset(tmp_path)
    metadata.write_text("lesion_id,image_id,dx\n")
    with pytest.raises(DatasetError, match="HAM10000_metadata.csv: header row but no data rows"):
        read_dataset(tmp_path)
    metadata.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(DatasetError, match="HAM10000_metadata.csv: not a text CSV file"):
        read_dataset(tmp_path)
    metadata.write_text("lesion_id,image_id,dx\nHAM_1,ISIC_0000001,xyz\n")
    with pytest.raises(DatasetError, match=r"HAM10000_metadata.csv: row 2 \(ISIC_0000001\): unknown diagnosis 'xyz'"):
        read_dataset(tmp_path)


def test_isic_ground_truth_errors(tmp_path):
    truth = tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv"
    write_image(tmp_path / "images" / "ISIC_0000001.jpg")
    truth.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0000001,1.0,1.0,0,0,0,0,0\n")
    with pytest.raises(
        DatasetError, match=r"ISIC2018_Task3_Test_GroundTruth.csv: row 2 \(ISIC_0000001\): more than one diagnosis"
    ):
        read_dataset(tmp_path)
    truth.write_text("image,MEL,NV,XYZ\nISIC_0000001,1.0,0,0\n")
    with pytest.raises(DatasetError, match=r"column 'XYZ': unknown diagnosis 'xyz'"):
        read_dataset(tmp_path)


def test_ham10000_without_images(tmp_path):
    (tmp_path / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\nHAM_1,ISIC_0000001,mel\n")
    with pytest.raises(DatasetError, match=r"no ISIC_\*.jpg images found \(expected them in .*images\)"):
        read_dataset(tmp_path)


# --------------------------------------------------------------------------- PH2


def test_ph2_reads_the_spreadsheet_below_its_legend(ph2_root):
    report = read_dataset(ph2_root)
    assert report.format == "ph2"
    assert len(report.samples) == 200
    assert Counter(s.detail for s in report.samples) == {"common_nevus": 80, "atypical_nevus": 80, "melanoma": 40}
    assert report.label_counts == {"benign": 160, "malignant": 40}
    assert all(s.label == (s.detail == "melanoma") for s in report.samples)
    assert report.rows_without_image == report.images_without_row == 0
    first = next(s for s in report.samples if s.group == "IMD003")
    assert (first.detail, first.path.name) == ("common_nevus", "IMD003.jpg")
    assert first.mask_path == ph2_root / "lesion_masks" / "IMD003_lesion.png"
    assert all(s.mask_path is not None and s.mask_path.is_file() for s in report.samples)


def test_ph2_atypical_is_malignant_option(ph2_root):
    report = read_dataset(ph2_root, atypical_is_malignant=True)
    assert report.label_counts == {"benign": 80, "malignant": 120}
    assert all(s.label == (s.detail != "common_nevus") for s in report.samples)
    assert "atypical nevi counted as malignant" in report.summary()


def test_ph2_spreadsheet_parsing_on_a_small_copy(tmp_path):
    rows = PH2_LEGEND + [
        PH2_HEADER,
        ["IMD001", None, "X", None, None, 0],
        ["IMD002", "Dysplastic Nevus", None, " x ", None, 1],
        ["IMD003", "Melanoma", None, None, "X", 2],
        ["IMD004", None, None, None, None, 0],  # no diagnosis marked
        [None, None, None, None, None],
    ]
    write_xlsx(tmp_path / "PH2_dataset.xlsx", rows)
    for n in (1, 2, 3, 4):
        write_image(tmp_path / "images" / f"IMD00{n}.jpg")
    write_image(tmp_path / "lesion_masks" / "IMD001_lesion.png")
    report = read_dataset(tmp_path)
    assert [(s.group, s.detail, s.label) for s in report.samples] == [
        ("IMD001", "common_nevus", 0),
        ("IMD002", "atypical_nevus", 0),
        ("IMD003", "melanoma", 1),
    ]
    assert report.samples[0].mask_path == tmp_path / "lesion_masks" / "IMD001_lesion.png"
    assert report.samples[1].mask_path is None
    assert report.dropped_rows == {"no clinical diagnosis marked": 1}
    assert report.images_without_row == 1
    assert "2 image(s) have no lesion mask" in report.summary()


def test_ph2_errors_name_the_file_and_problem(tmp_path):
    spreadsheet = tmp_path / "PH2_dataset.xlsx"
    write_image(tmp_path / "images" / "IMD001.jpg")
    write_xlsx(spreadsheet, PH2_LEGEND + [PH2_HEADER[:4], ["IMD001", None, "X", None]])
    with pytest.raises(DatasetError, match="PH2_dataset.xlsx: no 'Melanoma' column"):
        read_dataset(tmp_path)
    write_xlsx(spreadsheet, PH2_LEGEND + [PH2_HEADER, ["IMD001", None, "X", "X", None]])
    with pytest.raises(DatasetError, match=r"PH2_dataset.xlsx: row 6 \(IMD001\): more than one clinical diagnosis"):
        read_dataset(tmp_path)
    write_xlsx(spreadsheet, [["Name", "Melanoma"], ["IMD001", "X"]])
    with pytest.raises(DatasetError, match="PH2_dataset.xlsx: no header row with an 'Image Name' column"):
        read_dataset(tmp_path)
    spreadsheet.write_text("Image Name,Common Nevus,Atypical Nevus,Melanoma\nIMD001,X,,\n")
    with pytest.raises(DatasetError, match="PH2_dataset.xlsx: not a readable Excel workbook"):
        read_dataset(tmp_path)
    spreadsheet.write_bytes(b"")
    with pytest.raises(DatasetError, match="PH2_dataset.xlsx: file is empty"):
        read_dataset(tmp_path)


# --------------------------------------------------------------------------- folders


def test_folders_plain_layout_without_case_and_nested(tmp_path):
    write_image(tmp_path / "Benign" / "a.jpg")
    write_image(tmp_path / "Benign" / "more" / "b.PNG", format="PNG")
    write_image(tmp_path / "MALIGNANT" / "c.jpeg", format="JPEG")
    (tmp_path / "Benign" / "notes.txt").write_text("not an image")
    (tmp_path / "Benign" / ".DS_Store").write_bytes(b"\x00")
    report = read_dataset(tmp_path)
    assert report.format == "folders"
    assert sorted((s.path.name, s.label, s.split) for s in report.samples) == [
        ("a.jpg", 0, ""),
        ("b.PNG", 0, ""),
        ("c.jpeg", 1, ""),
    ]


def test_folders_original_split_layout_and_groups_from_file_names(tmp_path):
    write_image(tmp_path / "benign_train" / "HAM_1__ISIC_1.jpg")
    write_image(tmp_path / "benign_test" / "HAM_2__ISIC_2.jpg")
    write_image(tmp_path / "malign_train" / "IMD003.jpg")
    write_image(tmp_path / "malign_test" / "x.jpg")
    report = read_folders(tmp_path)
    assert sorted((s.group, s.label, s.split) for s in report.samples) == [
        ("HAM_1", 0, "train"),
        ("HAM_2", 0, "test"),
        ("IMD003", 1, "train"),
        ("x", 1, "test"),
    ]


def test_folders_errors(tmp_path):
    (tmp_path / "benign").mkdir()
    (tmp_path / "malignant").mkdir()
    with pytest.raises(DatasetError, match="hold no images"):
        read_dataset(tmp_path)
    write_image(tmp_path / "benign_train" / "a.jpg")
    with pytest.raises(DatasetError, match="has both benign/malignant and \\*_train/\\*_test folders"):
        read_dataset(tmp_path)


# --------------------------------------------------------------------------- detection


def test_format_detection_on_the_shared_datasets(datasets_root):
    expected = {"becode_sample": "original", "ham10000": "ham10000", "ph2": "ph2"}
    for folder, format in expected.items():
        if (datasets_root / folder).is_dir():
            assert detect_format(datasets_root / folder) == format


def test_explicit_format_overrides_detection(becode_root):
    with pytest.raises(DatasetError, match="no class folders; expected benign/ and malignant/"):
        read_dataset(becode_root, format="folders")


def test_unknown_folder_lists_the_known_formats(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError, match="not a dataset format I know") as error:
        read_dataset(tmp_path)
    for format in FORMATS:
        assert format in str(error.value)


def test_unknown_format_name_missing_folder_and_ambiguity(tmp_path):
    with pytest.raises(
        DatasetError, match="unknown dataset format 'isic'; known formats: original, ham10000, ph2, folders"
    ):
        read_dataset(tmp_path, format="isic")
    with pytest.raises(DatasetError, match="nowhere: no such folder"):
        read_dataset(tmp_path / "nowhere")
    (tmp_path / "PH2_dataset.xlsx").write_bytes(b"")
    (tmp_path / "benign").mkdir()
    with pytest.raises(DatasetError, match=r"more than one format \(ph2, folders\); pass format="):
        read_dataset(tmp_path)


# --------------------------------------------------------------------------- splits


def _samples(groups: dict[str, tuple[int, int]]) -> list[Sample]:
    """{group: (label, images)} -> samples."""
    return [
        Sample(path=Path(f"{group}_{i}.jpg"), label=label, group=group, source="test")
        for group, (label, count) in groups.items()
        for i in range(count)
    ]


def test_split_keeps_multi_image_groups_together_and_stratifies():
    rng = random.Random(0)
    groups = {f"b{n}": (0, rng.randint(1, 4)) for n in range(300)}
    groups.update({f"m{n}": (1, rng.randint(1, 4)) for n in range(60)})
    samples = _samples(groups)
    parts = split_samples(samples, (0.7, 0.15, 0.15), seed=3)
    sides = {}
    for index, part in enumerate(parts):
        for sample in part:
            assert sides.setdefault(sample.group, index) == index
    overall = sum(s.label for s in samples) / len(samples)
    for part, fraction in zip(parts, (0.7, 0.15, 0.15)):
        assert abs(len(part) / len(samples) - fraction) < 0.02
        assert abs(sum(s.label for s in part) / len(part) - overall) < 0.02
    assert split_samples(samples, (0.7, 0.15, 0.15), seed=3) == parts


def test_split_puts_a_mixed_group_on_one_side_and_checks_fractions():
    samples = _samples({"a": (0, 2), "b": (0, 1), "c": (0, 1)}) + _samples({"a": (1, 1)})
    train, test = split_samples(samples, (0.5, 0.5), seed=0)
    assert len({id(part) for part in (train, test) for s in part if s.group == "a"}) == 1
    train, val, empty = split_samples(samples, (0.5, 0.5, 0.0), seed=0)  # how training skips a split
    assert empty == [] and len(train) + len(val) == len(samples)
    with pytest.raises(ValueError, match="add up to 1"):
        split_samples(samples, (0.7, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        split_samples(samples, (1.2, -0.2))


# --------------------------------------------------------------------------- prepare_dataset


def test_write_split_folders_from_the_becode_sample(becode_root, tmp_path):
    dest = tmp_path / "prepared"
    report = read_dataset(becode_root)
    prepared = write_split_folders(report, dest, test_fraction=0.2, seed=42)
    assert sum(prepared.counts.values()) == 10
    assert prepared.counts["benign_train"] + prepared.counts["benign_test"] == 9
    assert prepared.counts["malign_train"] + prepared.counts["malign_test"] == 1
    assert sorted(p.name for p in dest.iterdir()) == [
        "benign_test",
        "benign_train",
        "malign_test",
        "malign_train",
        "manifest.csv",
    ]
    for image_path in dest.rglob("*.jpg"):
        with Image.open(image_path) as image:
            assert (image.size, image.mode) == ((224, 224), "RGB")
    reread = read_dataset(dest)
    assert reread.format == "folders" and reread.label_counts == {"benign": 9, "malignant": 1}
    assert "benign_train/: " in prepared.summary()

    with pytest.raises(DatasetError, match="prepared: not empty; use --force"):
        write_split_folders(report, dest)
    (dest / "benign_train" / "stale.jpg").write_bytes(b"old run")
    (dest / "README.txt").write_text("kept")
    write_split_folders(report, dest, seed=1, force=True)
    assert not (dest / "benign_train" / "stale.jpg").exists()
    assert (dest / "README.txt").read_text() == "kept"
    assert not [p for p in dest.iterdir() if p.name.startswith(".prepare-")]


def test_write_split_folders_keeps_groups_and_reports_unreadable_images(tmp_path):
    source = tmp_path / "source"
    for n in range(10):
        for view in range(2):  # two images of each lesion
            write_image(source / ("malignant" if n < 3 else "benign") / f"L{n}__view{view}.jpg")
    broken = source / "benign" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    report = read_dataset(source)
    dest = tmp_path / "dest"
    prepared = write_split_folders(report, dest, test_fraction=0.3, seed=0)
    assert prepared.skipped and prepared.skipped[0][0] == broken
    assert "skipped 1 unreadable image(s)" in prepared.summary()
    reread = read_dataset(dest)
    assert len(reread.samples) == 20
    split_of = {}
    for sample in reread.samples:
        assert split_of.setdefault(sample.group, sample.split) == sample.split
    assert {s.split for s in reread.samples} == {"train", "test"}


def test_write_split_folders_refuses_a_destination_inside_the_source(tmp_path):
    write_image(tmp_path / "benign" / "a.jpg")
    write_image(tmp_path / "malignant" / "b.jpg")
    with pytest.raises(DatasetError, match="must be outside the source dataset"):
        write_split_folders(read_dataset(tmp_path), tmp_path / "out")
    with pytest.raises(DatasetError, match="test fraction must be between 0 and 1"):
        write_split_folders(read_dataset(tmp_path), tmp_path.parent / "elsewhere", test_fraction=1.0)


def test_prepare_dataset_command(becode_root, tmp_path):
    django_settings = pytest.importorskip("django.conf").settings
    if not django_settings.configured:
        pytest.skip("Django settings are not configured (run through pytest-django's settings)")
    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command(
        "prepare_dataset", str(becode_root), str(tmp_path / "out"), "--test-fraction", "0.3", "--seed", "1", stdout=out
    )
    output = out.getvalue()
    assert "original dataset at" in output and "kat.Diagnose '?' (unknown)" in output
    assert "wrote 10 images to" in output and "malign_train/: " in output
    with pytest.raises(CommandError, match="not empty; use --force"):
        call_command("prepare_dataset", str(becode_root), str(tmp_path / "out"), stdout=io.StringIO())
    call_command("prepare_dataset", str(becode_root), str(tmp_path / "out"), "--force", stdout=io.StringIO())
