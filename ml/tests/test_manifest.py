"""The CSV-manifest format (labels.csv: image, label; diagnosis and group optional) on the real ISIC
collections in the shared datasets, and the errors a malformed manifest gets."""

import shutil

import pytest

from ml.data.datasets import DatasetError, detect_format, read_dataset


@pytest.fixture(scope="module")
def isic_roots(datasets_root):
    roots = {name: datasets_root / name for name in ("isic2017", "isic2020", "isic2019_sample")}
    missing = [str(path) for path in roots.values() if not path.is_dir()]
    if missing:
        pytest.skip(f"shared datasets not found: {', '.join(missing)}")
    return roots


@pytest.mark.parametrize(
    "name, n, malignant, groups, diagnoses",
    [
        ("isic2017", 2224, 398, 2206, {"MEL", "NV", "BKL"}),
        ("isic2020", 2608, 38, 98, {"melanoma", "unknown", "nevus", "lentigo NOS", "seborrheic keratosis"}),
        ("isic2019_sample", 255, 127, 195, {"MEL", "BCC", "SCC", "AK", "BKL", "DF", "VASC"}),
    ],
)
def test_the_isic_collections_read_as_manifests(isic_roots, name, n, malignant, groups, diagnoses):
    root = isic_roots[name]
    assert detect_format(root) == "manifest"
    report = read_dataset(root)
    assert len(report.samples) == n and report.label_counts["malignant"] == malignant
    assert len({s.group for s in report.samples}) == groups
    assert {s.detail for s in report.samples} <= diagnoses and report.rows_without_image == 0
    assert {s.source for s in report.samples} == {name}
    assert all(s.group.startswith(f"{name}:") for s in report.samples)  # groups of two sources never meet
    assert all(s.path.is_file() and s.path.parent.name == "images" for s in report.samples)
    # isic2020's groups are patients: each holds many images, and the malignant share is low
    if name == "isic2020":
        assert max(sum(s.group == g for s in report.samples) for g in {s.group for s in report.samples}) > 10


def _manifest(tmp_path, text: str, images=()):
    (tmp_path / "images").mkdir(exist_ok=True)
    for source in images:
        shutil.copyfile(source, tmp_path / "images" / source.name)
    (tmp_path / "labels.csv").write_text(text)
    return tmp_path


def test_listed_but_missing_and_present_but_unlisted_images_are_counted(isic_roots, tmp_path):
    real = sorted((isic_roots["isic2019_sample"] / "images").glob("*.jpg"))[:3]
    root = _manifest(
        tmp_path,
        "image,label,extra\n"
        f"images/{real[0].name},malignant,x\n"
        f"images/{real[1].name},Benign,y\n"
        "images/not_here.jpg,benign,z\n",
        images=real,
    )
    report = read_dataset(root)
    assert [s.label for s in report.samples] == [1, 0]
    assert report.rows_without_image == 1 and report.missing_image_examples == ["images/not_here.jpg"]
    assert report.images_without_row == 1 and report.unlabelled_image_examples == [f"images/{real[2].name}"]
    assert report.samples[0].group == f"{tmp_path.name.lower()}:{real[0].stem}"  # no group column: the image
    assert "1 label row(s) have no image file" in report.summary()


@pytest.mark.parametrize(
    "text, said",
    [
        ("picture,label\na.jpg,benign\n", "no header row with an 'image' column"),
        ("image,diagnosis\na.jpg,NV\n", "no 'label' column"),
        (
            "image,label\nimages/a.jpg,benign\nimages/b.jpg,maybe\n",
            "labels.csv, row 3: label 'maybe' is not benign or malignant",
        ),
        ("image,label\n,benign\n", "row 2: no image named"),
        ("image,label\n../elsewhere/a.jpg,benign\n", "row 2: image '../elsewhere/a.jpg' must be a path inside"),
        (
            "image,label\nimages/a.jpg,benign\nimages/A.jpg,malignant\n",
            "row 3: image 'images/A.jpg' is listed twice (first on row 2)",
        ),
        ("image,label\nimages/a.jpg,benign\n", "none of its 1 images were found"),
    ],
)
def test_a_malformed_manifest_is_refused_with_the_file_row_and_problem(tmp_path, text, said):
    root = _manifest(tmp_path, text)
    with pytest.raises(DatasetError, match=said.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        read_dataset(root)
