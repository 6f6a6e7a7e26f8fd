"""Detectors: rules that turn a run summary into diagnoses, one module per kind.

``diagnose`` runs them all and keeps at most one diagnosis per kind (the most severe, the
key metric winning ties), most urgent kind first: divergence, oscillation, overfitting,
plateau. A new detector implements ``Detector`` (see ``_base``) and is passed in
``detectors``.
"""

from __future__ import annotations

from collections.abc import Sequence

from autopilot.config import DetectorSettings
from autopilot.detectors._base import SEVERITY_RANK, Detector
from autopilot.detectors._divergence import DivergenceDetector
from autopilot.detectors._oscillation import OscillationDetector
from autopilot.detectors._overfitting import OverfittingDetector
from autopilot.detectors._plateau import PlateauDetector
from autopilot.diagnoses import Diagnosis
from autopilot.summary import RunSummary, Windows

__all__ = [
    "DEFAULT_DETECTORS",
    "PRIORITY",
    "Detector",
    "DivergenceDetector",
    "OscillationDetector",
    "OverfittingDetector",
    "PlateauDetector",
    "diagnose",
]

PRIORITY = ("divergence", "oscillation", "overfitting", "plateau")
DEFAULT_DETECTORS: tuple[Detector, ...] = (
    DivergenceDetector(),
    OscillationDetector(),
    OverfittingDetector(),
    PlateauDetector(),
)


def diagnose(
    summary: RunSummary,
    windows: Windows,
    settings: DetectorSettings,
    *,
    detectors: Sequence[Detector] = DEFAULT_DETECTORS,
) -> list[Diagnosis]:
    """Every detector's findings, at most one per kind, most urgent kind first."""
    chosen: dict[str, Diagnosis] = {}
    for detector in detectors:
        for found in detector.detect(summary, windows, settings):
            kept = chosen.get(found.kind)
            if kept is None or SEVERITY_RANK[found.severity] > SEVERITY_RANK[kept.severity]:
                chosen[found.kind] = found
    return sorted(chosen.values(), key=_urgency)


def _urgency(diagnosis: Diagnosis) -> int:
    return PRIORITY.index(diagnosis.kind) if diagnosis.kind in PRIORITY else len(PRIORITY)
