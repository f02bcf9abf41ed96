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


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX), where bf16 runs ~2x faster than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def embedding_dtype(device: str, requested: str = "auto"):
    """dtype for an embedding model: fp16 on GPUs, bf16 on CPUs with native bf16, else fp32.

    Embeddings tolerate half precision well (cosine to the fp32 vector stays above 0.99), and
    ingestion time is mostly embedding time, so ``auto`` takes the fastest safe choice.
    """
    import torch

    named = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if requested != "auto":
        return named[requested]
    if device.startswith("cuda") or device == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
