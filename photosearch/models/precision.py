"""How the image tower computes: the ``model.precision`` setting turned into a dtype, and the tower set up for it.

On a CPU, ``auto`` measures instead of guessing: bf16 helps only where the CPU has bf16 matrix instructions
(AVX512-BF16, AMX) and oneDNN uses them, and neither CPU flags nor torch's own probes say so reliably (some
report no AMX on CPUs where bf16 runs three times faster than fp32). A short fp32-vs-bf16 matrix product, shaped
like the model's own layers, settles it once per process. Where bf16 would be emulated it is slower than fp32,
and fp32 is chosen. On CUDA, bf16 where the GPU has bf16 tensor cores (compute capability 8.0 and up), fp16
before that; on Apple's MPS, fp16.

Only the image tower runs at the chosen precision: output vectors are float32 and L2-normalised whatever it is,
and the text tower stays float32 (a query is one short sequence, cheap at full precision).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from photosearch.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# bf16 rounds each activation to 8 significant bits: worth it only for a clear gain. Measured on CPUs that have
# it, bf16 runs 2.5-4x faster than fp32; emulated, it runs slower than fp32.
BF16_MIN_SPEEDUP = 1.4
QUICK_GELU_SCALE = 1.702  # transformers' QuickGELUActivation: x * sigmoid(1.702 * x)


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32", "bf16" or "fp16"
    reason: str  # why this one: shown in logs and by the benchmark

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """The precision to run the image tower at on ``device`` for the ``model.precision`` setting."""
    if setting == "fp16" and device.type == "cpu":
        # CPUs have no fast fp16 matrix path in torch (it is emulated: several times slower than fp32), and
        # fp16's narrow range overflows where bf16 would not. Refused rather than silently changed.
        raise ConfigError(
            "model.precision is fp16, which only a GPU (cuda, mps) runs well: on a CPU use auto, bf16 or fp32"
        )
    if setting != "auto":
        return Precision(setting, "set in model.precision")
    if device.type == "cuda":
        import torch

        if torch.cuda.get_device_capability(device) >= (8, 0):
            return Precision("bf16", "auto: the GPU has bf16 tensor cores")
        return Precision("fp16", "auto: a GPU without bf16 tensor cores")
    if device.type == "mps":
        return Precision("fp16", "auto: Apple GPU")
    speedup = cpu_bf16_speedup()
    if speedup >= BF16_MIN_SPEEDUP:
        return Precision("bf16", f"auto: bf16 matrix products measured {speedup:.1f}x faster than fp32 on this CPU")
    return Precision("fp32", f"auto: bf16 matrix products measured {speedup:.1f}x the speed of fp32 on this CPU")


@functools.cache
def cpu_bf16_speedup() -> float:
    """How many times faster a ViT-B-sized linear layer runs in bf16 than in fp32 here (once per process, ~0.2 s).

    Timed in blocks of ~20 ms, alternating, best block of each: on a busy machine the scheduler takes whole
    time slices (a few ms) from a thread, and blocks this long spread that loss evenly over both precisions
    instead of letting one lucky or unlucky call decide. The decode threads may be running while this does.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    x32 = torch.randn(256, 768, generator=generator)  # 256 tokens through a ViT-B MLP's first layer
    w32 = torch.randn(3072, 768, generator=generator)
    x16, w16 = x32.to(torch.bfloat16), w32.to(torch.bfloat16)

    def per_call(x: torch.Tensor, w: torch.Tensor, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            torch.nn.functional.linear(x, w)
        return (time.perf_counter() - start) / calls

    with torch.inference_mode():
        per_call(x32, w32, 1), per_call(x16, w16, 1)  # warm-up: oneDNN builds its kernels on first use
        fp32 = bf16 = float("inf")
        for _ in range(4):
            fp32 = min(fp32, per_call(x32, w32, 4))  # ~5 ms a call with 2 cores
            bf16 = min(bf16, per_call(x16, w16, 12))  # ~1.5 ms a call where bf16 is fast
    speedup = fp32 / bf16
    log.info("bf16 vs fp32 matrix products on this CPU: %.2fx", speedup)
    return speedup


def prepare_image_tower(model: Any, precision: Precision) -> None:
    """Set a loaded CLIPModel's image tower (and its projection) up to run at ``precision``, in place.

    First, where the tower uses quick-GELU (x * sigmoid(1.702 x), as OpenAI's CLIP checkpoints do), its constant
    is folded into the MLP weights, so the activation becomes one fused SiLU: fc2(quick_gelu(fc1(h))) equals
    fc2'(silu(fc1'(h))) with fc1' = 1.702 fc1 (weights and bias) and fc2' weights = fc2 weights / 1.702. That is
    the same function (exact in real arithmetic; float32 results move by ~1e-7), and on a CPU the tower runs
    ~25% faster in bf16: the activation's three element-wise passes over the widest tensor (x 3072 channels)
    cost as much as a quarter of the matrix products. Done in float32, before the cast, so it adds no rounding.
    """
    import torch
    from transformers.activations import QuickGELUActivation

    mlps = [layer.mlp for layer in model.vision_model.encoder.layers]
    if all(isinstance(mlp.activation_fn, QuickGELUActivation) for mlp in mlps):
        with torch.no_grad():
            for mlp in mlps:
                mlp.fc1.weight.mul_(QUICK_GELU_SCALE)
                mlp.fc1.bias.mul_(QUICK_GELU_SCALE)
                mlp.fc2.weight.div_(QUICK_GELU_SCALE)
                mlp.activation_fn = torch.nn.SiLU()
    model.vision_model.to(precision.dtype)
    model.visual_projection.to(precision.dtype)
