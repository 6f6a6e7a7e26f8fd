"""Detectors: rules that turn a run summary into diagnoses, one module per kind.

``diagnose`` runs the detectors it is given and keeps at most one diagnosis per kind (the
most severe, the key metric winning ties), most urgent kind first: divergence, oscillation,
overfitting, plateau. ``default_detectors`` builds the four from the config's
``[detectors]`` section. A new detector implements ``Detector`` (see ``_base``), takes its
parameters in its constructor, and is passed to ``Autopilot(..., detectors=[...])``.

Example:
    >>> from autopilot.config import DetectorSettings
    >>> [d.name for d in default_detectors(DetectorSettings())]
    ['divergence', 'oscillation', 'overfitting', 'imbalance', 'plateau']
    >>> PlateauDetector(patience_steps=5)
    Traceback (most recent call last):
    ...
    autopilot.errors.ConfigError: patience_steps must be an integer >= 10, got 5
"""

from __future__ import annotations

from collections.abc import Sequence

from autopilot.config import DetectorSettings
from autopilot.detectors._base import (
    SEVERITY_RANK,
    Detector,
    check_above,
    check_at_least,
    check_int,
)
from autopilot.detectors._divergence import DivergenceDetector
from autopilot.detectors._imbalance import ImbalanceDetector
from autopilot.detectors._oscillation import OscillationDetector
from autopilot.detectors._overfitting import OverfittingDetector
from autopilot.detectors._plateau import PlateauDetector
from autopilot.diagnoses import Diagnosis
from autopilot.summary import RunSummary, Windows

__all__ = [
    "PRIORITY",
    "Detector",
    "DivergenceDetector",
    "ImbalanceDetector",
    "OscillationDetector",
    "OverfittingDetector",
    "PlateauDetector",
    "check_above",
    "check_at_least",
    "check_int",
    "default_detectors",
    "diagnose",
]

PRIORITY = ("divergence", "oscillation", "overfitting", "imbalance", "plateau")


def default_detectors(settings: DetectorSettings) -> tuple[Detector, ...]:
    """The five built-in detectors, configured from the ``[detectors]`` section."""
    return (
        DivergenceDetector(
            factor=settings.divergence_factor,
            grad_explosion_factor=settings.grad_explosion_factor,
            min_points=settings.min_points,
            scale_rel=settings.divergence_scale_rel,
        ),
        OscillationDetector(volatility=settings.oscillation_volatility),
        OverfittingDetector(
            patience_steps=settings.overfit_patience_steps,
            worse_rel=settings.overfit_rel,
            patience_evals=settings.overfit_patience_evals,
            patience_frac=settings.overfit_patience_frac,
            worse_rel_improving=settings.overfit_rel_improving,
        ),
        ImbalanceDetector(share=settings.imbalance_share, min_points=settings.min_points),
        PlateauDetector(
            patience_steps=settings.plateau_patience_steps,
            progress_rel=settings.plateau_rel,
            min_points=settings.min_points,
            patience_evals=settings.plateau_patience_evals,
            patience_frac=settings.plateau_patience_frac,
            anneal_frac=settings.anneal_frac,
            still_high=settings.plateau_still_high,
        ),
    )


def diagnose(
    summary: RunSummary, windows: Windows, detectors: Sequence[Detector]
) -> list[Diagnosis]:
    """Every detector's findings, at most one per kind, most urgent kind first."""
    chosen: dict[str, Diagnosis] = {}
    for detector in detectors:
        for found in detector.detect(summary, windows):
            kept = chosen.get(found.kind)
            if kept is None or _outranks(found, kept):
                chosen[found.kind] = found
    divergence = chosen.get("divergence")
    if divergence is not None and divergence.evidence.get("damaged"):
        for kind in ("oscillation", "overfitting", "plateau"):  # a dead network is none
            chosen.pop(kind, None)
    return sorted(chosen.values(), key=_urgency)


def _outranks(found: Diagnosis, kept: Diagnosis) -> bool:
    """More severe wins; between equals, a damaged network (whose answer is a rewind)."""
    if SEVERITY_RANK[found.severity] != SEVERITY_RANK[kept.severity]:
        return SEVERITY_RANK[found.severity] > SEVERITY_RANK[kept.severity]
    return bool(found.evidence.get("damaged")) and not kept.evidence.get("damaged")


def _urgency(diagnosis: Diagnosis) -> int:
    return PRIORITY.index(diagnosis.kind) if diagnosis.kind in PRIORITY else len(PRIORITY)
