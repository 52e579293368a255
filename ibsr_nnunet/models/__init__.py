"""Trained models behind one interface (protocol.TrainedModel): every module of this package is imported here, so
each kind in it registers itself (registry.register) and a new kind needs no other line."""

import importlib
import pkgutil

from .protocol import PredictSettings, TrainedModel, Validation
from .registry import checked_name, kind_of, known, load_model, register, trained_models

# in name order: baseline registers before nnunet, and so answers first for a stray name
for _module in sorted(found.name for found in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["PredictSettings", "TrainedModel", "Validation", "checked_name", "kind_of", "known", "load_model",
           "register", "trained_models"]
