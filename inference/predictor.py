"""One ``ml.predict.Predictor`` per worker process and model version.

Created lazily inside the task (never at import, never in the prefork parent): torch and CUDA must not be initialised
before fork, and web processes must not pay for importing torch.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from django.conf import settings

from inference.models import ModelVersion

logger = logging.getLogger(__name__)

MAX_CACHED_MODELS = 2  # a worker switching between versions keeps two, not every version it ever saw

_predictors: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()


class ModelArtifactError(RuntimeError):
    """The registered artifact is missing or its weights changed after registration."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_sha256(directory: Path) -> str:
    """Identity of a model artifact: sha256 over the weights and the card together. The card decides threshold,
    scan pooling and test-time augmentation, so a recalibrated card on the same weights is a different model."""
    digest = hashlib.sha256()
    for name in ("model.pt", "metadata.json"):
        digest.update(f"{name}:{file_sha256(directory / name)}\n".encode())
    return digest.hexdigest()


def get_predictor(model_version: ModelVersion) -> Any:
    """The cached predictor for ``model_version``; loads it on first use after checking the artifact's sha256."""
    with _lock:
        predictor = _predictors.get(model_version.sha256)
        if predictor is not None:
            _predictors.move_to_end(model_version.sha256)
            return predictor
        weights = model_version.directory / "model.pt"
        if not weights.is_file() or not (model_version.directory / "metadata.json").is_file():
            logger.error("Weights of model version %s not found at %s", model_version, weights)
            raise ModelArtifactError(f"The weights of model version {model_version} are missing on this worker.")
        # A prediction must be produced by exactly the weights it names.
        if artifact_sha256(model_version.directory) != model_version.sha256:
            logger.error("Weights at %s do not match the sha256 of model version %s", weights, model_version)
            raise ModelArtifactError(f"The weights on this worker do not match model version {model_version}.")
        from ml.predict import Predictor  # imports torch

        predictor = Predictor(model_version.directory, device=settings.HEMO_INFERENCE_DEVICE)
        _predictors[model_version.sha256] = predictor
        while len(_predictors) > MAX_CACHED_MODELS:
            _predictors.popitem(last=False)
        return predictor


def clear_predictors() -> None:
    with _lock:
        _predictors.clear()
