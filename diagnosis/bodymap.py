"""The body map: a front and a back outline of a standing body, made of named parts.

One description serves both sides: the templates draw the parts (an SVG the clinician
clicks, or tabs to and presses Enter), and `site_at` tells the server which part a pin
is on, so that the body site stored with a photo always agrees with its lesion's pin.
Each part is a HAM10000 body site (models.BodySite), the vocabulary the model was
trained with. Coordinates are the outline's own units: 100 wide, HEIGHT high.
"""

from __future__ import annotations

from dataclasses import dataclass

from .choices import BodySite, MapView

WIDTH, HEIGHT = 100, 215


@dataclass(frozen=True)
class Part:
    site: str  # a BodySite value
    shape: str  # "rect" or "ellipse"
    x: float  # rect: left; ellipse: centre
    y: float  # rect: top; ellipse: centre
    w: float  # rect: width; ellipse: x radius
    h: float  # rect: height; ellipse: y radius

    @property
    def label(self) -> str:
        return BodySite(self.site).label

    @property
    def centre(self) -> tuple[float, float]:
        if self.shape == "ellipse":
            return self.x, self.y
        return self.x + self.w / 2, self.y + self.h / 2

    def contains(self, x: float, y: float) -> bool:
        if self.shape == "ellipse":
            return ((x - self.x) / self.w) ** 2 + ((y - self.y) / self.h) ** 2 <= 1.0
        return self.x <= x <= self.x + self.w and self.y <= y <= self.y + self.h


def _limbs() -> list[Part]:
    """Arms, hands, legs and feet: the same on both sides (the first match wins, so the trunk's
    parts are listed before these)."""
    return [
        Part(BodySite.UPPER_EXTREMITY, "rect", 18, 40, 13, 58),
        Part(BodySite.UPPER_EXTREMITY, "rect", 69, 40, 13, 58),
        Part(BodySite.HAND, "rect", 17, 99, 14, 14),
        Part(BodySite.HAND, "rect", 69, 99, 14, 14),
        Part(BodySite.LOWER_EXTREMITY, "rect", 34, 112, 15, 86),
        Part(BodySite.LOWER_EXTREMITY, "rect", 51, 112, 15, 86),
        Part(BodySite.FOOT, "rect", 32, 199, 17, 12),
        Part(BodySite.FOOT, "rect", 51, 199, 17, 12),
    ]


PARTS: dict[str, list[Part]] = {
    MapView.FRONT: [
        Part(BodySite.FACE, "ellipse", 50, 17, 11, 14),
        Part(BodySite.NECK, "rect", 44, 31, 12, 8),
        Part(BodySite.CHEST, "rect", 32, 39, 36, 33),
        Part(BodySite.GENITAL, "rect", 43, 104, 14, 10),
        Part(BodySite.ABDOMEN, "rect", 34, 72, 32, 40),
        *_limbs(),
    ],
    MapView.BACK: [
        Part(BodySite.SCALP, "ellipse", 50, 17, 11, 14),
        Part(BodySite.NECK, "rect", 44, 31, 12, 8),
        Part(BodySite.BACK, "rect", 32, 39, 36, 63),
        Part(BodySite.TRUNK, "rect", 34, 102, 32, 12),
        *_limbs(),
    ],
}


def site_at(view: str, x: float | None, y: float | None) -> str:
    """The body site under a pin, or "" where the pin is off the outline (or no pin)."""
    if x is None or y is None:
        return ""
    for part in PARTS.get(view, []):
        if part.contains(x, y):
            return str(part.site)
    return ""


def figures(pins=()) -> list[dict]:
    """What the body-map template draws: each side with its parts and the pins on it.
    `pins`: (view, x, y, label, url) tuples."""
    drawn = []
    for view in MapView:
        drawn.append(
            {
                "view": view.value,
                "label": view.label,
                "width": WIDTH,
                "height": HEIGHT,
                "parts": [
                    {"part": part, "site": part.site, "label": part.label, "cx": part.centre[0], "cy": part.centre[1]}
                    for part in PARTS[view]
                ],
                "pins": [
                    {"x": x, "y": y, "label": label, "url": url}
                    for (pin_view, x, y, label, url) in pins
                    if pin_view == view
                ],
            }
        )
    return drawn
