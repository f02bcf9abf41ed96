"""Text recognition with RapidOCR (ONNX Runtime, CPU), one engine per process.

The engine takes ~0.2 s to create and holds ONNX sessions, so each process builds it once, lazily.
It is keyed by process id: ONNX Runtime thread pools do not survive fork, so a worker forked from a
parent that already had an engine must build its own.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import multiprocessing
import os
import threading
from typing import Any

import numpy as np
from PIL import Image

from server.knowledge_base.loaders.base import LoadContext
from server.knowledge_base.loaders.limits import LimitExceeded, check_pixels

logger = logging.getLogger(__name__)

# Lines RapidOCR is less sure about than this are mostly noise (texture, icons, stray strokes).
MIN_CONFIDENCE = 0.6
# Images smaller than this on either side cannot hold readable text (bullets, icons, spacers).
MIN_IMAGE_SIDE = 16

_engine: Any = None
_engine_pid: int | None = None
_engine_lock = threading.Lock()
# A child process that is the only parser (ingest's supervised child) may use every core.
_all_cores = False


def use_all_cores() -> None:
    global _all_cores
    _all_cores = True


class OCRUnavailable(RuntimeError):
    """rapidocr-onnxruntime is missing or failed to start."""


def get_engine():
    global _engine, _engine_pid
    with _engine_lock:
        if _engine is None or _engine_pid != os.getpid():
            _engine = _create_engine()
            _engine_pid = os.getpid()
        return _engine


def _create_engine(backend: str | None = None):
    from configs import get_settings

    settings = get_settings()
    backend = backend or settings.OCR_BACKEND
    detection = {"det_limit_type": settings.OCR_DET_LIMIT_TYPE, "det_limit_side_len": settings.OCR_DET_LIMIT_SIDE_LEN}
    # In a pool worker the other workers use the other cores; one thread each avoids oversubscription.
    threads = 1 if multiprocessing.parent_process() is not None and not _all_cores else -1
    if backend in ("auto", "openvino") and importlib.util.find_spec("rapidocr_openvino") is not None:
        engine = _openvino_engine(threads, detection)
    elif backend == "openvino":
        raise OCRUnavailable("OCR_BACKEND is openvino but rapidocr-openvino is not installed")
    else:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise OCRUnavailable(f"OCR needs rapidocr-onnxruntime or rapidocr-openvino: {exc}")
        engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=threads, **detection)
    _quiet_rapidocr_logging()
    return engine


def _openvino_engine(threads: int, detection: dict):
    """RapidOCR on OpenVINO, compiled in fp32 with our thread count.

    OpenVINO picks bf16 by itself on CPUs that have it, which misreads characters ("AllReduce" ->
    "AlIReduce"); fp32 gives the same text as ONNX Runtime, still about twice as fast. rapidocr-openvino
    has no option for either, so its module gets a Core that adds them when it compiles a model.
    """
    import rapidocr_openvino.utils.infer_engine as infer_engine
    from openvino.runtime import Core

    ours = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads > 0:
        ours["INFERENCE_NUM_THREADS"] = threads

    class FP32Core(Core):
        def compile_model(self, model, device_name="CPU", config=None):
            return super().compile_model(model, device_name, {**ours, **(config or {})})

    infer_engine.Core = FP32Core
    from rapidocr_openvino import RapidOCR

    return RapidOCR(**detection)


def _quiet_rapidocr_logging() -> None:
    # rapidocr attaches its own DEBUG-level stream handlers; only real errors should reach the console.
    for name in ("RapidOCR", "OrtInferSession"):
        logging.getLogger(name).setLevel(logging.ERROR)


def to_rgb_image(image: Image.Image | bytes | np.ndarray) -> Image.Image:
    """A PIL image, encoded image bytes or an RGB/RGBA/gray array, as an RGB image on white."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(bytes(image)))
        check_pixels(*image.size, what="picture")  # from the header, before the pixels are decoded
        image.load()
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode in ("RGBA", "LA", "P", "PA"):
        # Transparent text images would turn black-on-black if the alpha channel were just dropped.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, "white")
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def ocr_image(image: Image.Image | bytes | np.ndarray) -> str:
    """Text found in an image, lines in reading order: top to bottom, then left to right."""
    rgb = to_rgb_image(image)
    if min(rgb.size) < MIN_IMAGE_SIDE:
        return ""
    bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])  # RapidOCR takes arrays in OpenCV's BGR order
    result, _elapsed = get_engine()(bgr)
    lines = [(box, text) for box, text, score in result or [] if text.strip() and float(score) >= MIN_CONFIDENCE]
    return arrange_lines(lines)


def try_ocr_image(data: bytes, ctx: LoadContext | None = None) -> str:
    """OCR a picture embedded in a document; pictures Pillow cannot decode (EMF, WMF, ...) give "".

    A picture over OCR_MAX_PIXELS is skipped too, with a note on ctx: the document's text still counts.
    """
    try:
        return ocr_image(data)
    except LimitExceeded as exc:
        logger.warning("%s: skipping a picture: %s", ctx.source if ctx else "document", exc)
        if ctx is not None:
            ctx.note(f"a picture was not OCR'd: {exc}")
        return ""
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        logger.debug("skipping an embedded picture that could not be decoded: %s", exc)
        return ""


def arrange_lines(lines: list[tuple[list[list[float]], str]]) -> str:
    """Group detected boxes into rows by vertical overlap, then read each row left to right."""
    boxes = sorted((_box_extent(box), text.strip()) for box, text in lines)
    rows: list[list[tuple[tuple[float, float, float], str]]] = []
    for extent, text in boxes:
        if rows and _same_row(rows[-1], extent):
            rows[-1].append((extent, text))
        else:
            rows.append([(extent, text)])
    return "\n".join(" ".join(text for _, text in sorted(row, key=lambda item: item[0][2])) for row in rows)


def _box_extent(box: list[list[float]]) -> tuple[float, float, float]:
    """(top, bottom, left) of a four-point box."""
    ys = [point[1] for point in box]
    xs = [point[0] for point in box]
    return min(ys), max(ys), min(xs)


def _same_row(row: list[tuple[tuple[float, float, float], str]], extent: tuple[float, float, float]) -> bool:
    """A box joins a row when its vertical centre lies within the row's first box."""
    top, bottom, _ = row[0][0]
    centre = (extent[0] + extent[1]) / 2
    return top <= centre <= bottom
