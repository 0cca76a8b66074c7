"""The referral letter: one lesion, as a PDF a clinician can send or print.

Made with ReportLab (platypus): the pseudonymous patient reference, the lesion and
where it is (body site and its pin on a small body map), its photos oldest first
with their dates and outcomes, the latest heat map where the result page offers
one, each reviewer's decision and comment, the model version(s), and the
decision-support disclaimer. The words are the result page's (diagnosis/wording.py).
Nothing here writes to the database; the view records the download.
"""

from __future__ import annotations

import io
from datetime import datetime
from xml.sax.saxutils import escape

from django.utils import timezone
from reportlab.graphics.shapes import Circle, Drawing, Ellipse, Rect, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from . import bodymap, wording
from .models import BodySite, Lesion, MapView, Prediction

PHOTO_MM = 45


def _when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


def _image(field, width_mm: float = PHOTO_MM) -> Image | None:
    """A stored photo or heat map, scaled to width_mm wide; None if the file cannot be read."""
    try:
        with field.open("rb") as stored:
            data = io.BytesIO(stored.read())
    except (OSError, ValueError):
        return None
    image = Image(data)
    scale = width_mm * mm / image.imageWidth
    image.drawWidth, image.drawHeight = width_mm * mm, image.imageHeight * scale
    return image


def _body_map(lesion: Lesion) -> Drawing:
    """The front and back outlines, labelled underneath, with the lesion's pin in red."""
    scale, gap, below = 0.45, 14, 24  # points per outline unit; units between and under the outlines
    drawing = Drawing((bodymap.WIDTH * 2 + gap) * scale, (bodymap.HEIGHT + below) * scale)
    outline = {"fillColor": colors.HexColor("#eef1f5"), "strokeColor": colors.HexColor("#7a8496"), "strokeWidth": 0.4}
    for index, (view, parts) in enumerate(bodymap.PARTS.items()):
        left = index * (bodymap.WIDTH + gap)

        def point(x, y, left=left):  # the outline's y runs down, the PDF's up
            return (left + x) * scale, (bodymap.HEIGHT + below - y) * scale

        for part in parts:
            if part.shape == "ellipse":
                cx, cy = point(part.x, part.y)
                drawing.add(Ellipse(cx, cy, part.w * scale, part.h * scale, **outline))
            else:
                x, y = point(part.x, part.y + part.h)
                drawing.add(Rect(x, y, part.w * scale, part.h * scale, **outline))
        drawing.add(
            String((left + bodymap.WIDTH / 2) * scale, 2 * scale, MapView(view).label, fontSize=8, textAnchor="middle")
        )
        if lesion.has_pin and lesion.map_view == view:
            x, y = point(lesion.map_x, lesion.map_y)
            drawing.add(
                Circle(x, y, 5 * scale, fillColor=colors.HexColor("#a3231a"), strokeColor=colors.white, strokeWidth=0.8)
            )
    return drawing


def render(lesion: Lesion, predictions: list[Prediction]) -> bytes:
    """The letter for `lesion`, its photos being `predictions` (any order: sorted here, oldest first)."""
    predictions = sorted(predictions, key=lambda p: (p.upload.created_at, p.upload_id))
    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["BodyText"].clone("small", fontSize=8.5, leading=11)
    story: list = []

    def para(text: str, style=body):
        story.append(Paragraph(text, style))

    para("Referral: skin lesion for dermatology review", styles["Title"])
    para(f"<b>Patient reference:</b> {escape(lesion.patient_ref)} (pseudonymous)")
    para(f"<b>Lesion:</b> {escape(lesion.name)}")
    sites = sorted({p.upload.body_site for p in predictions if p.upload.body_site})
    site_text = ", ".join(BodySite(s).label for s in sites) or "not given"
    para(f"<b>Body site:</b> {escape(site_text)}")
    para(f"<b>Body map pin:</b> {escape(lesion.pin_description) if lesion.has_pin else 'not marked'}")
    if lesion.has_pin:
        story.append(_body_map(lesion))
    latest = next((p for p in reversed(predictions) if p.is_assessed), None)
    if latest is not None:
        para(
            f"<b>Latest result:</b> {escape(latest.get_outcome_display())} "
            f"({_when(latest.upload.created_at)}). <b>Next step:</b> {escape(latest.next_step)}"
        )
    story.append(Spacer(1, 4 * mm))

    para(f"Photos, oldest first ({len(predictions)})", styles["Heading2"])
    rows = [
        [
            Paragraph("<b>Photo</b>", small),
            Paragraph("<b>Date and outcome</b>", small),
            Paragraph("<b>Review</b>", small),
        ]
    ]
    for number, prediction in enumerate(predictions, start=1):
        outcome = [
            f"<b>Photo {number}</b>, {_when(prediction.upload.created_at)}",
            f"Outcome: {escape(prediction.get_outcome_display())}",
        ]
        if prediction.is_assessed:
            outcome.append(f"Model score {prediction.score}")
        else:
            outcome.append(escape(prediction.reason or prediction.get_status_display()))
        if prediction.boundary_note:
            outcome.append(escape(prediction.boundary_note))
        review = escape(prediction.review_state)
        if prediction.is_reviewed:
            review += f" by {escape(prediction.reviewed_by.get_username())}, {_when(prediction.reviewed_at)}"
        if prediction.review_comment:
            review += f"<br/>Comment: {escape(prediction.review_comment)}"
        rows.append(
            [
                _image(prediction.upload.image) or "(photo unreadable)",
                Paragraph("<br/>".join(outcome), small),
                Paragraph(review, small),
            ]
        )
    table = Table(rows, colWidths=[(PHOTO_MM + 4) * mm, 65 * mm, 55 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.4, colors.HexColor("#dfe3ea")),
            ]
        )
    )
    story.append(table)

    shown = next((p for p in reversed(predictions) if p.shows_heatmap), None)
    if shown is not None:
        heat = _image(shown.heatmap, 60)
        if heat is not None:
            number = predictions.index(shown) + 1
            story.append(
                KeepTogether(
                    [
                        Paragraph(
                            f"Where the model looked: photo {number} ({_when(shown.upload.created_at)})",
                            styles["Heading2"],
                        ),
                        heat,
                        Paragraph(escape(shown.heatmap_caption), small),
                    ]
                )
            )

    story.append(Spacer(1, 4 * mm))
    versions = sorted({p.model_version for p in predictions if p.model_version})
    para(f"<b>Model version:</b> {escape(', '.join(versions) or 'none (no photo assessed)')}", small)
    if latest is not None and latest.score_explained:
        para(escape(latest.score_explained), small)
    para(f"<b>{escape(wording.DISCLAIMER)}</b>", small)
    para(f"Letter made {_when(timezone.now())}.", small)

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
        title=f"Referral letter, lesion {lesion.pk}",
        author="skinCare",
        subject="Dermatology referral",
    )
    document.build(story)
    return buffer.getvalue()
