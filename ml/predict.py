"""Inference: a Predictor that loads a checkpoint once and scores one scan at a time, plus a small CLI.

    python -m ml.predict [--checkpoint DIR] PATH...

Each PATH is an image, a DICOM file or a folder holding one series; one JSON line per scan is printed.
torch is imported lazily (inside Predictor), so importing this module is cheap for the web process.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from ml import dicom as dcm
from ml import inputcheck, paths, preprocess

GRADCAM_CHUNK = 32  # slices whose Grad-CAM gradients share one backward pass


@dataclass
class ScanResult:
    """The prediction for one scan (a series, or one image as a series of one)."""

    probability: float
    label: bool
    threshold: float
    slice_probabilities: list[float]
    heatmaps: list[np.ndarray] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # How a thin-slice DICOM series was read (`ml.slabs.SlabPlan.to_dict`); empty when read slice by slice. When
    # set, each slice's probability, heat map and image are those of its slab.
    slabs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-friendly summary (without the arrays)."""
        return {
            "probability": self.probability,
            "label": self.label,
            "threshold": self.threshold,
            "slice_probabilities": self.slice_probabilities,
            "timings": self.timings,
            **({"slabs": self.slabs} if self.slabs else {}),
        }


class Predictor:
    """Loads a checkpoint folder once (weights_only=True) and predicts scans; CUDA when available."""

    def __init__(self, checkpoint_dir: str | Path | None = None, *, device: str | None = None):
        import torch

        from ml.train import load_model

        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else paths.default_checkpoint_dir()
        if not (self.checkpoint_dir / "model.pt").is_file():
            raise FileNotFoundError(f"no model.pt in {self.checkpoint_dir}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.metadata = load_model(self.checkpoint_dir, self.device)
        self.version: str = self.metadata["version"]
        self.threshold: float = float(self.metadata["threshold"])
        # Series (more than one slice) are judged at their own validation threshold where the card has one.
        self.series_threshold: float | None = self.metadata.get("series_threshold")
        self.pooling: str = self.metadata.get("scan_pooling", "mean")
        self.size: int = int(self.metadata["input"]["size"])
        # Test-time augmentation the card was validated with ("hflip": logits averaged with the mirrored slices).
        self.tta: str = self.metadata.get("tta", "none")
        # Thin-slice DICOM series are read as slabs of this thickness (ml.slabs); None: always slice by slice.
        self.slab_mm: float | None = self.metadata["input"].get("slab_mm")

    def predict_sources(self, sources: Sequence[str | Path | BinaryIO], *, heatmaps: bool = True) -> ScanResult:
        """One scan from files/streams, in the order given (sort DICOM series with ml.dicom first). A series of
        DICOM files only goes through `predict_series` (thin slices read as slabs)."""
        start = time.perf_counter()
        items = [preprocess.read_source(s) for s in sources]
        decode_time = time.perf_counter() - start
        if items and not any(isinstance(item, np.ndarray) for item in items):
            result = self.predict_series(items, heatmaps=heatmaps)
        else:
            slices = [item if isinstance(item, np.ndarray) else preprocess.dicom_to_slice(item) for item in items]
            result = self.predict_slices(slices, heatmaps=heatmaps)
        # predict_slices timed the crop/resize/normalise as "load"; add the decoding done here.
        result.timings["load"] = result.timings.get("load", 0.0) + decode_time
        return result

    def predict_series(self, datasets: Sequence, *, heatmaps: bool = True) -> ScanResult:
        """One DICOM series, ordered (`ml.dicom.sort_datasets`). Slices much closer than the card's ``slab_mm``
        are read as slabs of about that thickness (`ml.preprocess.series_slices`); each slice then gets its slab's
        probability, heat map and image, and ``slabs`` says how it was read."""
        start = time.perf_counter()
        slices, plan = preprocess.series_slices(datasets, slab_mm=self.slab_mm)
        window_time = time.perf_counter() - start
        result = self.predict_slices(slices, heatmaps=heatmaps)
        result.timings["load"] = result.timings.get("load", 0.0) + window_time
        if plan is not None:
            result.slice_probabilities = plan.expand(result.slice_probabilities)
            result.heatmaps = plan.expand(result.heatmaps) if result.heatmaps else []
            result.images = plan.expand(result.images)
            result.slabs = plan.to_dict()
        return result

    def predict_slices(self, slices: Sequence[np.ndarray], *, heatmaps: bool = True) -> ScanResult:
        """One scan from already-loaded uint8 slices in the model window (ml.preprocess.load_slice)."""
        import torch

        from ml.model import decision_threshold, forward_tta, scan_probability

        if not len(slices):
            raise ValueError("a scan needs at least one slice")
        start = time.perf_counter()
        images = [preprocess.crop_resize(np.asarray(s, np.uint8), size=self.size) for s in slices]
        x = torch.from_numpy(np.stack([preprocess.normalise(im) for im in images]))[None, :, None].to(self.device)
        lengths = torch.tensor([len(images)])
        load_time = time.perf_counter() - start
        start = time.perf_counter()
        fmap = None
        with torch.inference_mode():
            if self.tta == "none":
                # One encoder pass serves the prediction and the heat maps (its feature map is kept).
                out = self.model(x, lengths, return_features=heatmaps)
                fmap = out.get("features")
            else:
                out = forward_tta(self.model, x, lengths, self.tta)
            slice_p = torch.softmax(out["slice_logits"].float(), -1)[0, :, 1].cpu().numpy()
            prob = float(scan_probability(out, self.pooling)[0])
        inference_time = time.perf_counter() - start
        start = time.perf_counter()
        maps = self._gradcam(x, lengths, fmap) if heatmaps else []
        heatmap_time = time.perf_counter() - start
        threshold = decision_threshold(len(images), self.threshold, self.series_threshold)
        return ScanResult(
            probability=prob,
            label=bool(prob >= threshold),
            threshold=threshold,
            slice_probabilities=[float(p) for p in slice_p],
            heatmaps=maps,
            images=images,
            timings={"load": load_time, "inference": inference_time, "heatmap": heatmap_time},
        )

    def _gradcam(self, x, lengths, fmap=None) -> list[np.ndarray]:
        """Grad-CAM per slice: slice i's map weighs slice i's last conv feature map by the gradient of slice i's own
        hemorrhage logit (of the unmirrored view, also under flip test-time augmentation, so the map lines up with
        the image shown). The recurrent layers let every slice's features move every other slice's logit; summing
        the logits before differentiating would paint on slice i whatever in it raised any slice's evidence.

        An ensemble's logit is the mean of its members' logits, and each member's feature map moves only its own,
        so the ensemble's map is the mean of the members' weighted feature maps (before the ReLU). `fmap`, when
        given, is the prediction pass's feature map (a list of them for an ensemble), so the encoders do not run
        again."""
        import torch.nn.functional as F

        from ml.model import members_of

        members = members_of(self.model)
        fmaps = fmap if isinstance(fmap, list) else [fmap] * len(members)
        cam = sum(_weighted_features(m, x, lengths, f) for m, f in zip(members, fmaps, strict=True)) / len(members)
        cam = F.interpolate(F.relu(cam), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        # One scale per scan: slices with little evidence stay dim instead of being stretched to full range.
        peak = float(cam.max())
        cam = cam / peak if peak > 0 else cam
        return [c.cpu().numpy().astype(np.float32) for c in cam]


def _weighted_features(model, x, lengths, fmap=None):
    """One HemoNet's Grad-CAM before the ReLU: T x 1 x h x w, slice i's last feature map weighted channel by channel
    by the gradient of slice i's own hemorrhage logit.

    The head starts with a spatial mean of the feature map, so the channel weights are the gradients with respect to
    that mean. The per-slice gradients come from few backward passes: the scan runs as a batch of identical copies,
    copy i contributes only slice i's logit, and the copies are independent sequences, so copy i's gradient is slice
    i's own. Copies go in chunks to bound memory on long series. The encoder runs without autograd, and not at all
    when `fmap` (its feature map from the prediction pass) is given."""
    import torch

    t = x.shape[1]
    if fmap is None:
        with torch.no_grad():
            fmap = model.encoder(model.encoder_input(x, lengths))
    fmap = fmap.clone()  # out of inference mode, so it may enter an autograd graph's arithmetic
    pooled = fmap.mean(dim=(2, 3))  # T x C
    weights = torch.empty_like(pooled)
    # cuDNN's RNN kernels refuse a backward pass in eval mode ("cudnn RNN backward can only be called in training
    # mode"): on a GPU worker the recurrent layers run with cuDNN off for this pass only.
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        for start in range(0, t, GRADCAM_CHUNK):
            rows = torch.arange(start, min(t, start + GRADCAM_CHUNK), device=pooled.device)
            k = len(rows)
            copies = pooled.unsqueeze(0).repeat(k, 1, 1).requires_grad_(True)  # k copies x T slices x C
            out = model.forward_features(copies.reshape(k * t, -1, 1, 1), k, t, lengths.repeat(k))
            own = torch.arange(k, device=pooled.device)
            logits = out["slice_logits"][own, rows]  # copy j: slice start + j
            (logits[:, 1] - logits[:, 0]).sum().backward()
            weights[rows] = copies.grad[own, rows]  # d logit_i / d mean feature of slice i
    return (weights[:, :, None, None] * fmap).sum(1, keepdim=True)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45) -> Image.Image:
    """RGB overlay of a [0, 1] heat map (jet colours, weighted by the heat itself) on a uint8 greyscale slice."""
    from matplotlib import colormaps

    grey = np.asarray(image, np.float32)
    if grey.ndim == 3:
        grey = grey.mean(-1)
    heat = np.clip(np.asarray(heatmap, np.float32), 0, 1)
    if heat.shape != grey.shape:
        heat = np.asarray(Image.fromarray(heat).resize(grey.shape[::-1], Image.BILINEAR))
    colour = colormaps["jet"](heat)[..., :3] * 255.0
    a = (alpha * heat)[..., None]
    rgb = grey[..., None] * (1 - a) + colour * a
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")


def main(argv=None) -> int:
    """Entry point of `python -m ml.predict`: one JSON line per PATH, with the input check's verdict."""
    parser = argparse.ArgumentParser(prog="python -m ml.predict", description="Score head CT scans.")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (default: shipped model)")
    parser.add_argument("--device", default=None)
    parser.add_argument("paths", nargs="+", type=Path, help="image, DICOM file, or folder holding one series")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    predictor = Predictor(args.checkpoint, device=args.device)
    status = 0
    for path in args.paths:
        try:
            series = preprocess.dicom_series(path)
            if series is not None:  # DICOM: one file, a multi-frame file or a folder; thin slices read as slabs
                datasets, names = series
                not_axial = [n for ds, n in zip(datasets, names, strict=True) if not dcm.is_axial_slice(ds)]
                if not_axial:
                    raise ValueError(f"not axial slices (a localizer or a reformat): {', '.join(not_axial[:3])}")
                for ds, name in zip(datasets, names, strict=True):  # MR, RGB captures...: as the upload refuses
                    if reason := dcm.ct_header_rejection(ds):
                        raise ValueError(f"{name}: {reason}")
                thicknesses = [dcm.first_value(ds.get("SliceThickness")) for ds in datasets]
                # Every slice must hold Hounsfield units, as on upload; the input check looks at the slices the
                # platform's does (evenly spaced in a long series).
                checked = set(inputcheck.slices_to_check(len(datasets)))
                checks = []
                for i, (ds, name) in enumerate(zip(datasets, names, strict=True)):
                    hu = dcm.hu_released(ds)
                    if reason := dcm.ct_rejection_reason(ds, hu):
                        raise ValueError(f"{name}: {reason}")
                    if i in checked:
                        checks.append(inputcheck.check_slice(preprocess.apply_window(hu, *preprocess.MODEL_WINDOW)))
                result = predictor.predict_series(datasets, heatmaps=False)
            else:
                slices, names, colours = preprocess.read_scan(path)
                thicknesses = []
                checks = [inputcheck.check_slice(s, colour=c) for s, c in zip(slices, colours, strict=True)]
                result = predictor.predict_slices(slices, heatmaps=False)
            line = {
                "path": str(path),
                "model_version": predictor.version,
                "n_slices": len(names),
                "slices": names,
                **result.to_dict(),
                "input_check": inputcheck.check_scan(checks, total=len(names), slice_thicknesses=thicknesses).to_dict(),
            }
        except (OSError, ValueError) as exc:
            line, status = {"path": str(path), "error": str(exc)}, 1
        print(json.dumps(line), flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
