"""Which torch device a model runs on: CUDA when present, else Apple MPS, else CPU."""

from __future__ import annotations


def resolve_device(requested: str = "auto") -> str:
    """Map a settings value (auto | cpu | cuda | cuda:N | mps) to a device torch accepts."""
    requested = (requested or "auto").strip().lower()
    if requested in ("cpu",):
        return "cpu"
    import torch

    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device '{requested}' asked for, but CUDA is not available on this machine")
        return requested
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise RuntimeError("device 'mps' asked for, but MPS is not available on this machine")
        return "mps"
    if requested != "auto":
        raise ValueError(f"unknown device '{requested}': use auto, cpu, cuda, cuda:N or mps")
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def preferred_dtype(device: str):
    """bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32
