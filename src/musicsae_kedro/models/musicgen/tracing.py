"""All nnsight access for MusicGen lives here.

Decoder layer ``i`` is ``decoder.model.decoder.layers[i]``; its output is the residual
stream after the block (a tensor in transformers 5, a tuple in older versions:
handled once, below).
"""

from __future__ import annotations

import torch
from nnsight import NNsight
from transformers import MusicgenForConditionalGeneration


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class MusicgenTracer:
    """Teacher-forced passes that save decoder-layer outputs through nnsight."""

    def __init__(self, model: MusicgenForConditionalGeneration) -> None:
        self.model = model
        self._envoy = NNsight(model)

    def layer(self, index: int):
        return self._envoy.decoder.model.decoder.layers[index]

    @torch.no_grad()
    def layer_outputs(self, layers: list[int], **inputs: torch.Tensor) -> dict[int, torch.Tensor]:
        """Run the model once on ``inputs`` and return ``{layer: hidden_BLD}``.

        Layers above the last requested one still run: stopping early would change
        nothing stored but makes the pass incomparable with a plain forward.
        """
        saved: dict[int, torch.Tensor] = {}
        with self._envoy.trace(**inputs):
            for index in layers:
                saved[index] = _hidden(self.layer(index).output).save()
        return {index: _hidden(value) for index, value in saved.items()}
