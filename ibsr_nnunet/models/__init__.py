"""Trained models behind one interface (protocol.TrainedModel): every kind registers itself here on import."""

from . import baseline, nnunet  # noqa: F401  (registers the kinds: baselines first, the default for a stray name)
from .protocol import PredictSettings, TrainedModel, Validation
from .registry import checked_name, kind_of, known, load_model, register, trained_models

__all__ = ["PredictSettings", "TrainedModel", "Validation", "checked_name", "kind_of", "known", "load_model",
           "register", "trained_models"]
