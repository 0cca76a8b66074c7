"""A lesion followed over time: has it changed markedly since the last visit?

Evolution is the E of the ABCDE rule of melanoma: a mole that changes is a warning
sign. Here the change is in what the model says, visit by visit: a rise of the
probability of malignancy of at least SKINCARE_EVOLUTION_MIN_RISE (absolute), or,
with SKINCARE_EVOLUTION_HIGHER_OUTCOME, a move into a higher outcome (low risk ->
uncertain -> needs a doctor). Each assessed visit is compared with the assessed
visit before it; visits the model did not assess are shown but skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from .models import Prediction


@dataclass(frozen=True)
class Rule:
    min_rise: float
    higher_outcome: bool

    @classmethod
    def from_settings(cls) -> Rule:
        return cls(float(settings.SKINCARE_EVOLUTION_MIN_RISE), bool(settings.SKINCARE_EVOLUTION_HIGHER_OUTCOME))

    def __str__(self) -> str:
        text = (
            f"a rise of the probability of malignancy by {self.min_rise:.2f} or more since the previous assessed visit"
        )
        if self.higher_outcome:
            text += ", or a move into a higher outcome (low risk → uncertain → needs a doctor)"
        return text


@dataclass(frozen=True)
class Visit:
    prediction: Prediction
    previous: Prediction | None  # the assessed visit before this one
    rise: float | None  # probability now minus at the previous assessed visit
    higher_outcome: bool
    marked: bool  # a marked rise by the rule

    @property
    def upload(self):
        return self.prediction.upload


def follow(predictions: Iterable[Prediction], rule: Rule | None = None) -> list[Visit]:
    """The visits in date order (oldest first), each compared with the previous assessed one."""
    rule = rule or Rule.from_settings()
    visits: list[Visit] = []
    previous: Prediction | None = None
    for prediction in sorted(predictions, key=lambda p: (p.upload.created_at, p.upload_id)):
        if not prediction.is_assessed:
            visits.append(Visit(prediction, None, None, False, False))
            continue
        rise = higher = None
        if previous is not None:
            rise = prediction.probability_malignant - previous.probability_malignant
            rank = Prediction.OUTCOME_RANK
            higher = rank[prediction.outcome] > rank[previous.outcome]
        marked = previous is not None and (rise >= rule.min_rise - 1e-9 or (rule.higher_outcome and higher))
        visits.append(Visit(prediction, previous, rise, bool(higher), marked))
        previous = prediction
    return visits


def latest_change(visits: list[Visit]) -> Visit | None:
    """The last assessed visit, if the rule marks its change since the one before: the warning."""
    assessed = [v for v in visits if v.prediction.is_assessed]
    if assessed and assessed[-1].marked:
        return assessed[-1]
    return None
