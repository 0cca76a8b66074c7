"""The vocabularies the models store: body sites (HAM10000's, so that uploads and training data
agree) and the body map's two views. Their own module, so that the body map (diagnosis.bodymap)
and the models can both use them without importing each other."""

from django.db import models


class BodySite(models.TextChoices):
    # HAM10000's localisation vocabulary, so that uploads and training data agree.
    SCALP = "scalp", "Scalp"
    FACE = "face", "Face"
    EAR = "ear", "Ear"
    NECK = "neck", "Neck"
    CHEST = "chest", "Chest"
    ABDOMEN = "abdomen", "Abdomen"
    BACK = "back", "Back"
    TRUNK = "trunk", "Trunk"
    UPPER_EXTREMITY = "upper extremity", "Upper extremity"
    HAND = "hand", "Hand"
    LOWER_EXTREMITY = "lower extremity", "Lower extremity"
    FOOT = "foot", "Foot"
    ACRAL = "acral", "Acral (palm or sole)"
    GENITAL = "genital", "Genital"
    UNKNOWN = "unknown", "Unknown"


class MapView(models.TextChoices):
    FRONT = "front", "Front"
    BACK = "back", "Back"
