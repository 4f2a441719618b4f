"""Classical baselines on the same preprocessed slices and splits: hand-made features (intensity histogram, HOG,
LBP, GLCM) with SVM, k-NN and random forest; and the metadata-only shortcut control for Head CT (width, height,
colour mode of the raw file, nothing from the pixels' content)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC


def slice_features(u8: np.ndarray) -> np.ndarray:
    """Texture/intensity descriptor of one preprocessed slice (uint8 S x S)."""
    hist = np.histogram(u8, bins=32, range=(0, 256))[0].astype(np.float32)
    hist /= max(1.0, hist.sum())
    small = np.asarray(Image.fromarray(u8).resize((64, 64), Image.BILINEAR))
    hog_f = hog(small, orientations=8, pixels_per_cell=(16, 16), cells_per_block=(1, 1), feature_vector=True)
    lbp = local_binary_pattern(small, P=8, R=1, method="uniform")
    lbp_h = np.histogram(lbp, bins=10, range=(0, 10))[0].astype(np.float32)
    lbp_h /= max(1.0, lbp_h.sum())
    glcm = graycomatrix(small // 8, distances=[1, 3], angles=[0, np.pi / 2], levels=32, symmetric=True, normed=True)
    props = np.concatenate([graycoprops(glcm, p).ravel() for p in ("contrast", "homogeneity", "energy", "correlation")])
    return np.concatenate([hist, hog_f, lbp_h, props]).astype(np.float32)


def classifiers(seed: int) -> dict:
    return {
        "SVM (RBF)": make_pipeline(
            StandardScaler(), SVC(C=1.0, gamma="scale", class_weight="balanced", random_state=seed)
        ),
        "k-NN (k=7)": make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=7)),
        "random forest": RandomForestClassifier(
            n_estimators=300, class_weight="balanced_subsample", random_state=seed, n_jobs=1
        ),
    }


def _scores(clf, X) -> np.ndarray:
    if hasattr(clf, "predict_proba"):
        try:
            return clf.predict_proba(X)[:, 1]
        except AttributeError:
            pass
    d = clf.decision_function(X)
    return 1 / (1 + np.exp(-d))


def fit_predict(items_train, items_test, seed: int, feature_cache: dict | None = None) -> dict[str, dict]:
    """Train each classical model on the training slices (per-slice labels where present, else the scan label) and
    score the test scans: slice scores and scan score = max over the scan's slices."""
    feature_cache = {} if feature_cache is None else feature_cache

    def feats(it):
        if it.key not in feature_cache:
            feature_cache[it.key] = np.stack([slice_features(s) for s in it.slices])
        return feature_cache[it.key]

    X = np.concatenate([feats(it) for it in items_train])
    y = np.concatenate(
        [it.slice_labels if it.slice_labels is not None else np.full(len(it.slices), it.label) for it in items_train]
    )
    out = {}
    for name, clf in classifiers(seed).items():
        clf.fit(X, y)
        res = {}
        for it in items_test:
            p = _scores(clf, feats(it))
            res[it.key] = {
                "dataset": it.dataset,
                "label": it.label,
                "slice_p": p,
                "slice_labels": it.slice_labels,
                "scan": {"max_slice": float(p.max())},
                "loss": 0.0,
            }
        out[name] = res
    return out


def image_metadata(path: str | Path) -> list[float]:
    """Width, height and colour mode (RGBA flag, RGB flag) of the raw file: cues that must not matter."""
    with Image.open(path) as img:
        return [img.width, img.height, float(img.mode == "RGBA"), float(img.mode == "RGB")]


def metadata_classifier(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


def metadata_scores(train_paths: Sequence, train_y, test_paths: Sequence, seed: int) -> np.ndarray:
    """Metadata-only logistic regression: fit on train files, probabilities for test files."""
    clf = metadata_classifier(seed)
    clf.fit(np.array([image_metadata(p) for p in train_paths]), np.asarray(train_y))
    return clf.predict_proba(np.array([image_metadata(p) for p in test_paths]))[:, 1]
