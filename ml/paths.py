"""Where data, models and caches live. Everything resolvable without the data folder being present."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

HOW_TO_GET_DATA = (
    "The public head CT datasets are not part of the repository. Put them in ../shared/data (relative to the "
    "repository root) or point HEMO_DATA_DIR at a folder holding head_ct/ (Kaggle 'Head CT - hemorrhage', "
    "labels.csv), ct_ich/ (PhysioNet CT-ICH 1.0.0 JPG release: Patients_CT/, hemorrhage_diagnosis.csv) and "
    "dicom/. See ../shared/data/README.md and each SOURCE.md for where each set comes from."
)


class DataNotFound(FileNotFoundError):
    """The data folder (or a dataset inside it) is missing; the message says how to get the public datasets."""


def data_dir(required: bool = True) -> Path:
    """The data root: env HEMO_DATA_DIR, else ../shared/data relative to the repository root.

    With required=True a missing folder raises DataNotFound (tests turn that into a skip).
    """
    env = os.environ.get("HEMO_DATA_DIR")
    path = Path(env).expanduser() if env else (REPO_ROOT.parent / "shared" / "data")
    path = path.resolve()
    if required and not path.is_dir():
        raise DataNotFound(f"Data folder {path} not found. {HOW_TO_GET_DATA}")
    return path


def dataset_dir(name: str, required: bool = True) -> Path:
    """One dataset inside the data root (head_ct, ct_ich, dicom)."""
    path = data_dir(required=required) / name
    if required and not path.is_dir():
        raise DataNotFound(f"Dataset folder {path} not found. {HOW_TO_GET_DATA}")
    return path


def default_checkpoint_dir() -> Path:
    """The shipped default model: ml/models/default/ (model.pt + metadata.json + curves.png + roc.png)."""
    return REPO_ROOT / "ml" / "models" / "default"


def cache_dir() -> Path:
    """Cache of preprocessed slices (env HEMO_CACHE_DIR, default /tmp/hemo_cache); safe to delete."""
    path = Path(os.environ.get("HEMO_CACHE_DIR", "/tmp/hemo_cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path
