"""Calibration data for static INT8 quantization (onnxruntime and the TFLite converter).

Samples are float32 NCHW arrays, normalised like ImageNet inputs. ``random`` data is the default
(nothing to download, and latency does not depend on the values); a folder of images gives
realistic activation ranges when accuracy matters.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from spaces import SpaceError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class Calibration:
    """A reusable source of calibration samples of one input shape (NCHW)."""

    def __init__(self, shape: tuple[int, ...], samples: int = 16, seed: int = 0, image_dir: str | Path | None = None):
        if samples < 1:
            raise SpaceError("calibration samples", samples, ">= 1")
        self.shape, self.samples, self.seed = tuple(shape), samples, seed
        self.image_dir = Path(image_dir) if image_dir else None
        if self.image_dir is not None:
            if not self.image_dir.is_dir():
                raise SpaceError("calibration image folder", str(self.image_dir), "an existing folder of images")
            self.files = sorted(p for p in self.image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise SpaceError("calibration image folder", str(self.image_dir),
                                 f"a folder containing images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            if len(shape) != 4 or shape[1] != 3:
                raise SpaceError("calibration input shape", shape, "(1, 3, H, W) for images")

    def describe(self) -> str:
        return f"{self.samples} images from {self.image_dir}" if self.image_dir else f"{self.samples} random samples"

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.image_dir is not None:
            for i in range(self.samples):
                yield self._load(self.files[i % len(self.files)])
            return
        rng = np.random.default_rng(self.seed)
        for _ in range(self.samples):
            yield np.clip(rng.standard_normal(self.shape, dtype=np.float32), -2.5, 2.5)

    def _load(self, path: Path) -> np.ndarray:
        from PIL import Image

        h, w = self.shape[2], self.shape[3]
        img = Image.open(path).convert("RGB")
        scale = max(h, w) * 256 / 224 / min(img.size)
        img = img.resize((max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale))), Image.BILINEAR)
        left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
        arr = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0
        arr = (arr - IMAGENET_MEAN) / IMAGENET_STD
        return arr.transpose(2, 0, 1)[None].astype(np.float32)

    # --- adapters --------------------------------------------------------------------------------


class MultiCalibration:
    """Calibration for models with several inputs (e.g. the two-input ``add`` kernel)."""

    def __init__(self, parts: list[Calibration]):
        self.parts = parts

    @classmethod
    def of(cls, calib: "Calibration | MultiCalibration | None", shapes: list[tuple[int, ...]]) -> "MultiCalibration":
        if isinstance(calib, MultiCalibration):
            return calib
        if calib is None:
            return cls([Calibration(s, seed=i) for i, s in enumerate(shapes)])
        if len(shapes) != 1:
            raise SpaceError("calibration", calib.describe(), f"one source per input ({len(shapes)} inputs)")
        return cls([calib])

    def describe(self) -> str:
        return "; ".join(p.describe() for p in self.parts)

    def __iter__(self):
        return zip(*self.parts)

    def ort_reader(self, input_names: list[str]):
        from onnxruntime.quantization import CalibrationDataReader

        calib = self

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter(calib)

            def get_next(self):
                xs = next(self._it, None)
                return None if xs is None else dict(zip(input_names, xs))

            def rewind(self):
                self._it = iter(calib)

        return _Reader()

    def tflite_dataset(self):
        """Representative dataset for the TFLite converter (NHWC for 4-D samples)."""
        for xs in self:
            yield [x.transpose(0, 2, 3, 1) if x.ndim == 4 else x for x in xs]
