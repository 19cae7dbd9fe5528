"""Hardware-aware weight handling for training (REFERENCE §7, AnalogNets §4.2, simple form).

The optimizer updates *latent* float weights; each forward pass uses

    W_eff = clamp(W_latent, −c, c) + N(0, (eta · max|clamp(W_latent)|)²)

per analog layer, with ``c = clip_sigma · σ(W_latent)``. Gradients flow through the noise
unchanged and through the clamp as torch's clamp defines it (zero outside ``[−c, c]``).
Biases are digital: never clipped, never noised. Stage 1 recomputes ``c`` every
:data:`CLIP_UPDATE_STEPS` steps; stage 2 fixes ``c`` from its starting weights.
DAC/ADC quantization during training is not done here yet (see ``docs/models.md``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from harness.errors import ConfigError

#: AnalogNets §4.2: stage-1 clip ranges follow σ_W, updated every 10 steps.
CLIP_UPDATE_STEPS = 10


class HardwareAwareWeights:
    """Clip ranges and per-forward weight noise for the analog layers of a Sequential.

    Args:
        net: the float network whose Linear/Conv2d weights are the latent weights.
        clip_sigma: ``α`` of the clip range ``±α·σ_W``, or ``None`` for no clipping.
        eta: relative weight-noise coefficient (``0`` for none).
        generator: the torch Generator the noise is drawn from.
        fixed_clip: compute ``c`` once now (stage 2) instead of every
            :data:`CLIP_UPDATE_STEPS` steps (stage 1).

    Raises:
        ConfigError: ``clip_sigma <= 0`` or ``eta < 0``.
    """

    def __init__(
        self,
        net: nn.Sequential,
        *,
        clip_sigma: float | None,
        eta: float,
        generator: torch.Generator,
        fixed_clip: bool,
    ) -> None:
        if clip_sigma is not None and not (np.isfinite(clip_sigma) and clip_sigma > 0.0):
            raise ConfigError(f"clip_sigma={clip_sigma} must be a finite number > 0 (or None)")
        if not (np.isfinite(eta) and eta >= 0.0):
            raise ConfigError(f"weight_noise_eta={eta} must be a finite number >= 0")
        self._net = net
        self._clip_sigma = clip_sigma
        self._eta = eta
        self._generator = generator
        self._fixed_clip = fixed_clip
        self._analog = [
            f"{name}.weight" for name, child in net.named_children() if isinstance(child, nn.Linear | nn.Conv2d)
        ]
        self._steps = 0
        self.clip: dict[str, float] = {}
        self._update_clip()

    def _update_clip(self) -> None:
        if self._clip_sigma is None:
            return
        params = dict(self._net.named_parameters())
        self.clip = {key: float(self._clip_sigma * params[key].detach().std()) for key in self._analog}

    def step_done(self) -> None:
        """Call after every optimizer step (stage 1 refreshes the clip ranges on schedule)."""
        self._steps += 1
        if not self._fixed_clip and self._steps % CLIP_UPDATE_STEPS == 0:
            self._update_clip()

    def effective(self, *, noisy: bool) -> dict[str, torch.Tensor]:
        """Parameters for ``torch.func.functional_call``: clipped, plus noise if ``noisy``."""
        params = dict(self._net.named_parameters())
        for key in self._analog:
            w = params[key]
            if key in self.clip:
                w = torch.clamp(w, -self.clip[key], self.clip[key])
            if noisy and self._eta > 0.0:
                sigma = self._eta * w.detach().abs().max()
                w = w + sigma * torch.randn(w.shape, generator=self._generator, dtype=w.dtype)
            params[key] = w
        return params

    def export_into_net(self) -> None:
        """Write the clipped latent weights into the network (the weights that get deployed)."""
        with torch.no_grad():
            params = dict(self._net.named_parameters())
            for key, c in self.clip.items():
                params[key].clamp_(-c, c)
