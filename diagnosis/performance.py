"""How the model really performs on this clinic's own confirmed cases.

A confirmed case is a prediction of a photo whose lesion has a final diagnosis
(diagnosis/final_diagnoses.py). Among those the model assessed, the diagnosis says
whether the model should have said "needs a doctor" (FinalDiagnosis.TARGET) and the
stored outcome says what it did say. Two rules are measured:

- at the saved threshold: referred = "needs a doctor";
- with the uncertain band: referred = "needs a doctor" or "uncertain" (what the
  clinic's pages tell the clinician to have a doctor look at).

Each proportion comes with a 95% Wilson score interval (Wilson 1927; sound for small
counts and for 0% and 100%, unlike the normal approximation). Where the interval is
wider than MAX_INTERVAL_WIDTH, or nothing was counted, the figure is marked "too few
confirmed cases to say". AUC (the probability that a malignant case scores above a
benign one) is given only with MIN_CASES_PER_CLASS_FOR_AUC of each class, with the
Hanley-McNeil 95% interval.

What this cannot tell: confirmed cases are a biased sample. Lesions called "needs a
doctor" are excised and sent for histology far more often than those called low
risk, so missed cancers surface late or never (verification bias): sensitivity
measured here is an upper estimate, and the low-risk side is under-counted. Photos of
one lesion share its diagnosis and are counted one by one, so they are not
independent cases.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils.dateparse import parse_date

from .models import FinalDiagnosis, Prediction

Z_95 = 1.959963984540054
MAX_INTERVAL_WIDTH = 0.30  # wider than this: "too few confirmed cases to say"
MIN_CASES_PER_CLASS_FOR_AUC = 5
CALIBRATION_BINS = 5
BIASED_SAMPLE_STATEMENT = (
    "Confirmed cases are a biased sample: lesions the model (or the clinician) referred are sent for histology far "
    "more often than those called low risk, so a missed cancer may never be confirmed here. Sensitivity on this page "
    "is therefore an upper estimate, and every figure describes the confirmed cases, not all patients."
)
TOO_FEW = "too few confirmed cases to say"

RULES = {
    "threshold": ("At the saved threshold", (Prediction.Outcome.NEEDS_DOCTOR,)),
    "with_uncertain_band": ("With the uncertain band", (Prediction.Outcome.NEEDS_DOCTOR, Prediction.Outcome.UNCERTAIN)),
}


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval for successes/total; None when total is 0."""
    if total <= 0:
        return None
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Rate:
    """One proportion with its 95% Wilson interval."""

    successes: int
    total: int
    value: float | None = None
    low: float | None = None
    high: float | None = None
    too_few: bool = True

    @classmethod
    def of(cls, successes: int, total: int) -> Rate:
        interval = wilson_interval(successes, total)
        if interval is None:
            return cls(successes, total)
        low, high = interval
        return cls(successes, total, successes / total, low, high, too_few=(high - low) > MAX_INTERVAL_WIDTH)


@dataclass
class RuleFigures:
    """The confusion counts and the rates for one referral rule."""

    rule: str
    label: str
    true_positive: int
    false_negative: int
    true_negative: int
    false_positive: int
    sensitivity: Rate
    specificity: Rate
    ppv: Rate
    npv: Rate
    referral_rate: Rate


@dataclass
class Summary:
    """The figures for one set of assessed confirmed cases (one model version, or all)."""

    cases: int
    malignant: int
    benign: int
    lesions: int
    rules: dict[str, RuleFigures]
    # False when none of the cases had an uncertain band: both rules then refer the same photos.
    uncertain_band: bool = False
    auc: float | None = None
    auc_low: float | None = None
    auc_high: float | None = None
    auc_note: str = ""
    calibration: list[dict] = field(default_factory=list)
    roc: list[dict] = field(default_factory=list)


@dataclass
class Case:
    """A confirmed case: one prediction and the final diagnosis of its lesion."""

    prediction: Prediction
    final: FinalDiagnosis

    @property
    def malignant(self) -> bool:
        return self.final.is_malignant

    @property
    def assessed(self) -> bool:
        return self.prediction.status == Prediction.Status.DONE


def parse_period(start: str = "", end: str = "") -> tuple[datetime.date | None, datetime.date | None]:
    """The date range of the filter (upload dates, both ends included), refused in words when wrong."""
    dates = []
    for name, text in (("start", start), ("end", end)):
        text = (text or "").strip()
        if not text:
            dates.append(None)
            continue
        parsed = None
        try:
            parsed = parse_date(text)
        except ValueError:
            pass
        if parsed is None:
            raise ValidationError(f"The {name} date {text!r} is not a date: use YYYY-MM-DD.")
        dates.append(parsed)
    if dates[0] and dates[1] and dates[0] > dates[1]:
        raise ValidationError(f"The start date {dates[0]:%Y-%m-%d} is after the end date {dates[1]:%Y-%m-%d}.")
    return dates[0], dates[1]


def confirmed_predictions(predictions: QuerySet[Prediction], start=None, end=None) -> QuerySet[Prediction]:
    """The predictions (of those given, e.g. the user's visible ones) whose lesion has a
    final diagnosis, uploaded in the period; newest first."""
    found = predictions.filter(upload__lesion__final_diagnosis__isnull=False).select_related(
        "upload", "upload__lesion", "upload__lesion__final_diagnosis"
    )
    if start:
        found = found.filter(upload__created_at__date__gte=start)
    if end:
        found = found.filter(upload__created_at__date__lte=end)
    return found.order_by("-upload__created_at", "-id")


def cases_of(predictions) -> list[Case]:
    return [Case(p, p.upload.lesion.final_diagnosis) for p in predictions]


def rule_figures(cases: list[Case], rule: str) -> RuleFigures:
    label, referred_outcomes = RULES[rule]
    counts = Counter((case.malignant, case.prediction.outcome in referred_outcomes) for case in cases)
    tp, fn = counts[(True, True)], counts[(True, False)]
    tn, fp = counts[(False, False)], counts[(False, True)]
    return RuleFigures(
        rule=rule,
        label=label,
        true_positive=tp,
        false_negative=fn,
        true_negative=tn,
        false_positive=fp,
        sensitivity=Rate.of(tp, tp + fn),
        specificity=Rate.of(tn, tn + fp),
        ppv=Rate.of(tp, tp + fp),
        npv=Rate.of(tn, tn + fn),
        referral_rate=Rate.of(tp + fp, len(cases)),
    )


def auc_with_interval(malignant: list[float], benign: list[float]) -> tuple[float, float, float]:
    """The Mann-Whitney AUC (ties count half) and the Hanley-McNeil (1982) 95% interval.

    From the ranks (O(n log n)), not from every pair: a clinic's thousands of cases stay fast."""
    scores = sorted([(p, True) for p in malignant] + [(p, False) for p in benign])
    rank_sum, index = 0.0, 0
    while index < len(scores):
        end = index
        while end < len(scores) and scores[end][0] == scores[index][0]:
            end += 1
        average_rank = (index + 1 + end) / 2  # ranks index+1 .. end, shared by the ties
        rank_sum += average_rank * sum(1 for _, is_malignant in scores[index:end] if is_malignant)
        index = end
    n1, n0 = len(malignant), len(benign)
    auc = (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc)) / (n1 * n0)
    half = Z_95 * math.sqrt(max(variance, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def roc_points(malignant: list[float], benign: list[float]) -> list[dict]:
    """The ROC curve's corners, one per distinct probability (highest first), from (0, 0) to (1, 1)."""
    scores = sorted([(p, True) for p in malignant] + [(p, False) for p in benign], reverse=True)
    points = [{"threshold": None, "fpr": 0.0, "tpr": 0.0}]
    true_positive = false_positive = index = 0
    while index < len(scores):
        cut = scores[index][0]
        while index < len(scores) and scores[index][0] == cut:
            true_positive += scores[index][1]
            false_positive += not scores[index][1]
            index += 1
        points.append({"threshold": cut, "fpr": false_positive / len(benign), "tpr": true_positive / len(malignant)})
    return points


def calibration_bins(cases: list[Case], bins: int = CALIBRATION_BINS) -> list[dict]:
    """Equal-width bins of the predicted probability: how many cases, their mean predicted
    probability and the fraction that were malignant (with its Wilson interval)."""
    grouped: dict[int, list[Case]] = defaultdict(list)
    for case in cases:
        grouped[min(int(case.prediction.probability_malignant * bins), bins - 1)].append(case)
    rows = []
    for index in range(bins):
        members = grouped.get(index, [])
        observed = Rate.of(sum(case.malignant for case in members), len(members))
        rows.append(
            {
                "low": index / bins,
                "high": (index + 1) / bins,
                "cases": len(members),
                "mean_predicted": (sum(c.prediction.probability_malignant for c in members) / len(members))
                if members
                else None,
                "observed": observed,
            }
        )
    return rows


def summarize(cases: list[Case]) -> Summary:
    """The figures for the assessed cases among `cases`."""
    assessed = [case for case in cases if case.assessed]
    malignant = [c.prediction.probability_malignant for c in assessed if c.malignant]
    benign = [c.prediction.probability_malignant for c in assessed if not c.malignant]
    summary = Summary(
        cases=len(assessed),
        malignant=len(malignant),
        benign=len(benign),
        lesions=len({case.final.lesion_id for case in assessed}),
        rules={rule: rule_figures(assessed, rule) for rule in RULES},
        uncertain_band=any(case.prediction.has_uncertain_band for case in assessed),
        calibration=calibration_bins(assessed) if assessed else [],
    )
    if malignant and benign:
        summary.roc = roc_points(malignant, benign)
    if min(len(malignant), len(benign)) >= MIN_CASES_PER_CLASS_FOR_AUC:
        summary.auc, summary.auc_low, summary.auc_high = auc_with_interval(malignant, benign)
    else:
        summary.auc_note = (
            f"No AUC: it needs at least {MIN_CASES_PER_CLASS_FOR_AUC} malignant and {MIN_CASES_PER_CLASS_FOR_AUC} "
            f"benign assessed cases (here {len(malignant)} and {len(benign)})."
        )
    return summary


def counts_by_diagnosis(cases: list[Case]) -> list[dict]:
    """One row per final diagnosis present: how many of its photos got each outcome."""
    counts = Counter((case.final.diagnosis, case.prediction.outcome) for case in cases)
    rows = []
    for value, label in FinalDiagnosis.Diagnosis.choices:
        per_outcome = {outcome: counts[(value, outcome)] for outcome in Prediction.Outcome.values}
        total = sum(per_outcome.values())
        if total:
            rows.append(
                {
                    "diagnosis": value,
                    "label": label,
                    "malignant": value in FinalDiagnosis.TARGET,
                    "outcomes": per_outcome,
                    "total": total,
                }
            )
    return rows


def missed_cancers(cases: list[Case]) -> list[Case]:
    """Low risk, final diagnosis malignant: the safety signal. Newest upload first."""
    missed = [case for case in cases if case.prediction.outcome == Prediction.Outcome.LOW_RISK and case.malignant]
    return sorted(missed, key=lambda case: (case.prediction.upload.created_at, case.prediction.pk), reverse=True)


@dataclass
class Report:
    start: datetime.date | None
    end: datetime.date | None
    cases: list[Case]
    overall: Summary
    by_model_version: dict[str, Summary]
    counts: list[dict]
    missed: list[Case]

    @property
    def not_assessed(self) -> int:
        return sum(not case.assessed for case in self.cases)


def build_report(predictions: QuerySet[Prediction], *, start=None, end=None) -> Report:
    """Everything the performance page and its JSON show, for the confirmed cases among `predictions`."""
    cases = cases_of(confirmed_predictions(predictions, start, end))
    versions: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        if case.assessed:
            versions[case.prediction.model_version or "unknown"].append(case)
    return Report(
        start=start,
        end=end,
        cases=cases,
        overall=summarize(cases),
        by_model_version={version: summarize(members) for version, members in sorted(versions.items())},
        counts=counts_by_diagnosis(cases),
        missed=missed_cancers(cases),
    )


def _case_row(case: Case) -> dict:
    prediction, upload = case.prediction, case.prediction.upload
    return {
        "prediction": prediction.pk,
        "uploaded_at": upload.created_at.isoformat(),
        "patient_ref": upload.patient_ref,
        "lesion": upload.lesion_id,
        "model_version": prediction.model_version,
        "probability_malignant": prediction.probability_malignant,
        "threshold": prediction.threshold,
        "uncertain_threshold": prediction.uncertain_threshold,
        "outcome": prediction.outcome,
        "final_diagnosis": case.final.diagnosis,
        "malignant": case.malignant,
        "established_by": case.final.method,
        "diagnosed_on": case.final.diagnosed_on.isoformat(),
    }


def report_as_json(report: Report) -> dict:
    """The report as plain data (the API's answer)."""
    return {
        "start": report.start.isoformat() if report.start else None,
        "end": report.end.isoformat() if report.end else None,
        "method": {
            "intervals": "95% Wilson score intervals; AUC with the Hanley-McNeil 95% interval",
            "too_few_when_interval_wider_than": MAX_INTERVAL_WIDTH,
            "min_cases_per_class_for_auc": MIN_CASES_PER_CLASS_FOR_AUC,
            "malignant_diagnoses": sorted(FinalDiagnosis.TARGET),
            "unit": "one photo (prediction) per case; photos of one lesion share its final diagnosis",
        },
        "biased_sample": BIASED_SAMPLE_STATEMENT,
        "confirmed_predictions": len(report.cases),
        "not_assessed": report.not_assessed,
        "overall": asdict(report.overall),
        "by_model_version": {version: asdict(summary) for version, summary in report.by_model_version.items()},
        "counts_by_diagnosis": report.counts,
        "missed_cancers": [_case_row(case) for case in report.missed],
    }


CSV_COLUMNS = [
    "prediction",
    "uploaded_at",
    "patient_ref",
    "lesion",
    "model_version",
    "probability_malignant",
    "threshold",
    "uncertain_threshold",
    "outcome",
    "final_diagnosis",
    "malignant",
    "established_by",
    "diagnosed_on",
]


def cases_csv(report: Report) -> str:
    """The confirmed cases, one row per prediction, pseudonymous: the patient reference
    and ids only; no names, no free-text notes or comments (they can hold a name)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case in report.cases:
        writer.writerow(_case_row(case))
    return buffer.getvalue()
