"""Device profiles and latency prediction: fitted on measurements, or derived from a datasheet."""

from .predictor import Prediction, predict_latency

__all__ = ["Prediction", "predict_latency"]
