"""Training callbacks: likelihood-drift probes and their measurements."""

from align.callbacks.drift import DRIFT_PREFIX, LikelihoodDriftCallback
from align.callbacks.measure import PairMeasurement, ches, drift_metrics, gradient_cosine, measure_pairs, pearson
from align.callbacks.plot import DRIFT_PANELS, plot_drift

__all__ = [
    "DRIFT_PANELS",
    "DRIFT_PREFIX",
    "LikelihoodDriftCallback",
    "PairMeasurement",
    "ches",
    "drift_metrics",
    "gradient_cosine",
    "measure_pairs",
    "pearson",
    "plot_drift",
]
