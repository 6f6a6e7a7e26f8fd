"""Knobs: what a command can change in a live training run."""

from kernel.knobs._base import FnKnob, Knob, KnobSpec, knob_family
from kernel.knobs.optimizer import DEFAULT_BOUNDS, OptimizerKnob, optimizer_knobs
from kernel.knobs.simple import GradClipKnob, LossWeightKnob

__all__ = [
    "DEFAULT_BOUNDS",
    "FnKnob",
    "GradClipKnob",
    "Knob",
    "KnobSpec",
    "LossWeightKnob",
    "OptimizerKnob",
    "knob_family",
    "optimizer_knobs",
]
