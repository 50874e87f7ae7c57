"""Label quality: the consensus of several annotators (Dawid-Skene or CROWDLAB, with a
model's out-of-sample probabilities where there are some; or majority vote), agreement
between annotators (Cohen's kappa per pair, Krippendorff's alpha for the project) and likely
label errors for review.

Pure logic over labels and probabilities: knows no store, Label Studio, Celery or torch; the
orchestrator feeds it what the store holds and decides what to do with its answers.
"""

from quality.agreement import AnnotatorSummary, cohen_kappa, krippendorff_alpha, summarise
from quality.consensus import (
    CROWDLAB,
    DAWID_SKENE,
    MAJORITY,
    METHODS,
    Consensus,
    Vote,
    consensus,
)
from quality.errors import QualityError
from quality.issues import likely_errors

__all__ = [
    "CROWDLAB",
    "DAWID_SKENE",
    "MAJORITY",
    "METHODS",
    "AnnotatorSummary",
    "Consensus",
    "QualityError",
    "Vote",
    "cohen_kappa",
    "consensus",
    "krippendorff_alpha",
    "likely_errors",
    "summarise",
]
