"""Inference benchmark of the shipped model: parameters, FLOPs per slice, latency, throughput.

    python bench/predict.py [--checkpoint DIR] [--device cpu|cuda] [--threads 2] [--json-only]

Prints a JSON object and then a table. Latency covers the model only (preprocessed input already in memory) and,
separately, the end-to-end Predictor path (crop/resize/normalise + model + Grad-CAM) for one image and a 30-slice
series, and the worker's path for a 240-slice thin DICOM series from its files' bytes (read as 5 mm slabs). FLOPs
are counted with torch.utils.flop_counter.FlopCounterMode (a multiply-add counts as 2 FLOPs).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from ml import paths  # noqa: E402
from ml.model import count_parameters  # noqa: E402


def _timeit(fn, repeats: int, device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(device: torch.device, checkpoint: Path | None) -> dict:
    from ml.predict import Predictor

    predictor = Predictor(checkpoint, device=str(device))
    model, size = predictor.model, predictor.size
    from ml.model import forward_tta

    # FLOPs as the Predictor runs the model: flip test-time augmentation (per the card) doubles them.
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        forward_tta(model, torch.zeros(1, 1, 1, size, size, device=device), torch.tensor([1]), predictor.tta)
    flops_slice = counter.get_total_flops()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        forward_tta(model, torch.zeros(1, 30, 1, size, size, device=device), torch.tensor([30]), predictor.tta)
    flops_series = counter.get_total_flops()

    def run(n):
        x = torch.randn(1, n, 1, size, size, device=device)
        lengths = torch.tensor([n])

        def f():
            with torch.inference_mode():
                forward_tta(model, x, lengths, predictor.tta)  # as the Predictor runs it (flip TTA per the card)

        return f

    repeats = 5 if device.type == "cpu" else 20
    one = _timeit(run(1), repeats * 2, device)
    series = _timeit(run(30), repeats, device)
    throughput = {}
    for b in (8, 16, 32, 64, 128):
        throughput[b] = b / _timeit(run(b), max(3, repeats // 2), device)
    best = max(throughput, key=throughput.get)
    rng = np.random.default_rng(0)
    raw = [rng.integers(0, 255, (512, 512), dtype=np.uint8) for _ in range(30)]
    for r in raw:  # a bright disc so the head crop has something to find
        yy, xx = np.mgrid[:512, :512]
        r[((yy - 256) ** 2 + (xx - 256) ** 2) > 200**2] = 0
    e2e_one = _timeit(lambda: predictor.predict_slices(raw[:1], heatmaps=True), repeats, device)
    e2e_series = _timeit(lambda: predictor.predict_slices(raw, heatmaps=True), max(2, repeats // 2), device)
    e2e_series_noheat = _timeit(lambda: predictor.predict_slices(raw, heatmaps=False), max(2, repeats // 2), device)
    # The worker's path for a thin-slice DICOM series (0.625 mm, read as 5 mm slabs): decode, HU, slabs, model and
    # Grad-CAM, from the files' bytes.
    thin = _thin_series_bytes(THIN_SLICES, THIN_SPACING_MM)
    e2e_thin = _timeit(lambda: predictor.predict_sources([io.BytesIO(b) for b in thin], heatmaps=True), 2, device)
    thin_slabs = predictor.predict_sources([io.BytesIO(b) for b in thin], heatmaps=False).slabs
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "model_version": predictor.version,
        "input_size": size,
        "tta": predictor.tta,
        "parameters": count_parameters(model),
        "gflops_per_slice": flops_slice / 1e9,
        "gflops_30_slice_series": flops_series / 1e9,
        "latency_one_image_s": one,
        "latency_30_slice_series_s": series,
        "throughput_slices_per_s": {str(k): v for k, v in throughput.items()},
        "best_batch": best,
        "best_slices_per_s": throughput[best],
        "end_to_end_one_image_with_heatmap_s": e2e_one,
        "end_to_end_30_slices_with_heatmaps_s": e2e_series,
        "end_to_end_30_slices_no_heatmaps_s": e2e_series_noheat,
        f"end_to_end_{THIN_SLICES}_thin_dicom_slices_with_heatmaps_s": e2e_thin,
        "thin_series_reading": thin_slabs,
    }


THIN_SLICES, THIN_SPACING_MM = 240, 0.625  # a head in 15 cm of thin slices


def _thin_series_bytes(n: int, spacing: float, size: int = 512) -> list[bytes]:
    """A synthetic thin-slice CT series (512 x 512, signed 16-bit HU: air, a skull ring, brain, noise) as DICOM file
    bytes."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    yy, xx = np.mgrid[:size, :size]
    r = np.hypot((yy - size / 2) / (0.42 * size), (xx - size / 2) / (0.36 * size))
    base = np.where(r < 1.0, 1000, -1000).astype(np.int16)
    base[r < 0.9] = 35
    rng = np.random.default_rng(0)
    series_uid, out = generate_uid(), []
    for i in range(n):
        hu = base + rng.normal(0, 8, base.shape).round().astype(np.int16)  # scanner noise: files compress as real ones
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = (
            CTImageStorage,
            meta.MediaStorageSOPInstanceUID,
            series_uid,
        )
        ds.Modality, ds.InstanceNumber = "CT", i + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, i * spacing], [1, 0, 0, 0, 1, 0]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = hu.tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = (
        [torch.device(args.device)]
        if args.device
        else [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    )
    results = [bench(d, args.checkpoint or paths.default_checkpoint_dir()) for d in devices]
    print(json.dumps(results if len(results) > 1 else results[0], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if not args.json_only:
        print()
        print(
            "| device | params | GFLOPs/slice | 1 image (s) | 30-slice series (s) | best slices/s (batch) | "
            "e2e 30 slices + Grad-CAM (s) | e2e 240 thin DICOM slices + Grad-CAM (s) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['device']} ({r['threads']} threads) | {r['parameters'] / 1e6:.2f} M | "
                f"{r['gflops_per_slice']:.3f} | {r['latency_one_image_s']:.4f} | "
                f"{r['latency_30_slice_series_s']:.3f} | {r['best_slices_per_s']:.0f} ({r['best_batch']}) | "
                f"{r['end_to_end_30_slices_with_heatmaps_s']:.3f} | "
                f"{r[f'end_to_end_{THIN_SLICES}_thin_dicom_slices_with_heatmaps_s']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
