"""The CPU convolution path of the autoencoder: oneDNN for every batch size, channels-last layout.

torch's CPU ``conv3d`` dispatch sends small inputs (a batch of one, what the controller decodes at
every step) to a slow reference kernel. :class:`Conv3d` calls oneDNN's convolution directly on
float32 CPU tensors, the kernel torch itself picks for training batches, and :func:`cpu_layout`
keeps activations channels-last, where these kernels run fastest. Other devices and dtypes take the
ordinary path; parameters and state-dict keys are those of ``nn.Conv3d``, so checkpoints are
unaffected. Timings: ``benchmarks/bench_latent_cost.py``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv3d", "convolve", "cpu_layout"]

_MKLDNN_CONVOLUTION = getattr(torch, "mkldnn_convolution", None)


def _takes_onednn(x: torch.Tensor) -> bool:
    """True where the CPU speed-ups below apply: float32 CPU tensors with oneDNN enabled."""
    return (
        _MKLDNN_CONVOLUTION is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def cpu_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout the CPU kernels here run fastest on (channels-last on oneDNN).

    Channels-last (``torch.channels_last_3d``) is a memory layout only: shapes, values and
    autograd are unchanged. On the CPU it speeds up the decoder (its trilinear upsamples most) at a
    batch of one and the encoder at training batch sizes, against the default (channels-first)
    layout (``benchmarks/bench_latent_cost.py``; the figures are in docs/results.md, "Throughput of the
    controller's hot path"). Other devices keep their layout.
    """
    return x.contiguous(memory_format=torch.channels_last_3d) if _takes_onednn(x) else x


def convolve(x: torch.Tensor, conv: nn.Conv3d, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv`` applied to ``x`` with the given ``weight`` and ``bias`` (oneDNN on the CPU)."""
    if _takes_onednn(x) and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple):
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last_3d)):
            x = x.contiguous()
        return _MKLDNN_CONVOLUTION(x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    return conv._conv_forward(x, weight, bias)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that always takes oneDNN (mkldnn) on the CPU, also for a batch of one.

    torch's CPU ``conv3d`` dispatch sends small inputs, in particular a batch of one (what the
    controller evaluates at every step), to ``aten::slow_conv3d``, several times slower per decode
    than oneDNN (found with ``torch.profiler``; ``benchmarks/bench_latent_cost.py``, figures in
    docs/results.md, "Throughput of the controller's hot path"). For float32
    CPU tensors this layer calls oneDNN's convolution directly, the kernel torch's dispatch itself
    picks for the training batches (batch > 1), with autograd, in the input's memory layout
    (channels-first or channels-last); other devices and dtypes take the ordinary path. Same
    parameters and state-dict keys as ``nn.Conv3d``, so checkpoints are unaffected; batch-1
    results agree with the slow path to float32 rounding (``tests/test_model.py`` compares them).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return convolve(x, self, self.weight, self.bias)
