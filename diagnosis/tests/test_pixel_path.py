"""One pixel path: a photo gives the model the same array whichever way it arrives.

Training, evaluation and gate fitting read files (`ml.preprocessing.preprocess(path)`);
the clinic uploads the same file through the form, which decodes it once, stores it as
PNG and hands the decoded image to the classifier; a retry reads the stored PNG back.
If any of these decoded differently (a JPEG decoded at reduced scale on one path only,
a lossy store, a colour conversion), the model would score a photo in the clinic
differently from how it was measured. Real photos from the shared datasets: the
difference showed only on large JPEGs such as PH2's.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diagnosis import services
from diagnosis.images import check_image
from diagnosis.models import Prediction
from diagnosis.tests.helpers import upload_file
from ml import preprocessing
from ml.serving import classifier

LIST_URL = "/api/predictions/"


def photos(root, tmp_path):
    """(what it is, path): a PH2 JPEG (765x572, what the reduced-scale decode hit), a HAM10000
    JPEG (224x224), a seed BMP of the original challenge, and a PH2 image saved as PNG."""
    ph2 = root / "ph2" / "images" / "IMD002.jpg"
    png = tmp_path / "IMD002.png"
    with Image.open(ph2) as image:
        image.save(png)
    return [
        ("PH2 JPEG", ph2),
        ("HAM10000 JPEG", sorted((root / "ham10000" / "images").glob("ISIC_*.jpg"))[0]),
        ("seed BMP", root / "becode_sample" / "SET_D" / "D53.BMP"),
        ("PH2 as PNG", png),
    ]


@pytest.fixture
def model_inputs(monkeypatch):
    """Every batch the model is asked about, as the model receives it."""
    seen: list[np.ndarray] = []
    analyse = classifier.LoadedModel.analyse

    def spy(self, batch, views=None):
        seen.append(np.array(batch, copy=True))
        return analyse(self, batch, views)

    monkeypatch.setattr(classifier.LoadedModel, "analyse", spy)
    return seen


def test_an_upload_gives_the_model_the_array_evaluation_reads_from_the_file(
    datasets_root, tmp_path, client, clinician, token_headers, standin_model, model_inputs
):
    for what, path in photos(datasets_root, tmp_path):
        assert path.is_file(), f"{what}: {path} is missing from the shared datasets"
        from_file = preprocessing.preprocess(path)  # training, evaluation, gate fitting

        model_inputs.clear()
        response = client.post(LIST_URL, {"image": upload_file(path.read_bytes(), path.name)}, **token_headers)
        assert response.status_code == 201, (what, response.content[:300])
        assert model_inputs, f"{what}: the model was never asked"
        assert model_inputs[0].shape == (1, 224, 224, 3)
        same = np.array_equal(model_inputs[0][0], from_file)
        assert same, (
            f"{what}: the uploaded photo reached the model as other pixels than preprocess(path) gives "
            f"(largest difference {np.abs(model_inputs[0][0] - from_file).max():.2f})"
        )

        prediction = Prediction.objects.get(pk=response.json()["id"])
        stored = prediction.upload.image
        with stored.open("rb") as file:
            assert np.array_equal(preprocessing.preprocess(file.read()), from_file), f"{what}: the stored file differs"
        with stored.open("rb") as file, Image.open(file) as reread:
            assert reread.format == "PNG"
            assert np.array_equal(np.asarray(reread), np.asarray(preprocessing.load_rgb(path))), (
                f"{what}: stored lossily"
            )

        # An upload stored but not yet scored (the model was missing, the worker stopped) is scored on
        # retry from the stored file: the same array again.
        pending = services.store_upload(
            uploaded_by=clinician, image=check_image(upload_file(path.read_bytes(), path.name))
        )
        model_inputs.clear()
        services.retry_prediction(pending.prediction)
        assert model_inputs and np.array_equal(model_inputs[0][0], from_file), f"{what}: the retry saw other pixels"


def test_a_fresh_upload_is_decoded_once_and_storage_is_read_only_on_retry(
    client, clinician, token_headers, standin_model, monkeypatch
):
    """The form decodes the upload; the model and the heat map use that image in memory. Reading the
    stored file back (and decoding it again) is for a retry only: for a 12 MP photo it cost 0.4 s."""
    from django.core.files.storage import FileSystemStorage

    from diagnosis.tests.helpers import lesion_on_skin_png

    decoded, opened = [], []
    image_open, storage_open = Image.open, FileSystemStorage.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: decoded.append(fp) or image_open(fp, *a, **k))
    monkeypatch.setattr(
        FileSystemStorage, "open", lambda self, name, *a, **k: opened.append(name) or storage_open(self, name, *a, **k)
    )

    response = client.post(
        LIST_URL, {"image": upload_file(lesion_on_skin_png(), "m.png", "image/png")}, **token_headers
    )
    assert response.status_code == 201 and response.json()["status"] == "done"
    prediction = Prediction.objects.get(pk=response.json()["id"])
    assert prediction.heatmap and len(decoded) == 1 and opened == []

    pending = services.store_upload(
        uploaded_by=clinician, image=check_image(upload_file(lesion_on_skin_png(), "m.png", "image/png"))
    )
    decoded.clear()
    retried = services.retry_prediction(pending.prediction)
    assert retried.status == "done" and retried.heatmap
    assert opened == [pending.image.name] and len(decoded) == 1
