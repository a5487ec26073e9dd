"""bf16 on a CPU only where the CPU computes in bf16 natively.

Without ``avx512_bf16`` or AMX a CPU converts bf16 to fp32 to compute, so ``bf16-mixed`` gains
nothing there and loses precision; with them its matrix products run in bf16. So ``lightning-rlhf fit`` keeps a
CPU run's ``bf16-mixed`` only where ``/proc/cpuinfo`` lists one of those flags, falls back to
``32-true`` elsewhere, and says which in one line.
"""

from __future__ import annotations

from pathlib import Path

import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str] | None:
    """The native-bf16 flags the CPU lists, or None where the flags cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in BF16_FLAGS if f in flags]


def resolve_cpu_precision(precision: str | int | None, accelerator: str,
                          flags: list[str] | None) -> tuple[str | int | None, str | None]:
    """(precision to use, one-line notice or None) for a run that asked for ``precision``.

    Only bf16 precisions on the CPU change: kept when ``flags`` lists native bf16, else
    ``32-true``. ``accelerator`` ``auto`` counts as the CPU when no GPU is visible.
    """
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if not on_cpu or str(precision) not in ("bf16-mixed", "bf16-true", "bf16"):
        return precision, None
    if flags:
        return precision, f"precision: {precision} (this CPU computes in bf16 natively: {', '.join(flags)})"
    why = "its flags cannot be read" if flags is None else f"it lists neither {' nor '.join(BF16_FLAGS)}"
    return "32-true", f"precision: 32-true instead of {precision}: this CPU has no native bf16 ({why})"
