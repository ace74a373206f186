"""All nnsight access for MusicGen lives here.

Decoder layer ``i`` is ``decoder.model.decoder.layers[i]``; its output is the residual
stream after the block (a tensor in transformers 5, a tuple in older versions:
handled once, below).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from nnsight import NNsight
from transformers import MusicgenForConditionalGeneration

# An edit at a site: (layer input hidden_BLD, layer output hidden_BLD) -> new output.
# Seeing the input lets an edit skip a layer (return the input) or replace only the
# layer's own contribution (output - input).
SiteEdit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


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

    @torch.no_grad()
    def logits_with_edits(
        self, edits: Mapping[int, SiteEdit], **inputs: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits ``(B*K, L, V)`` with ``edits`` applied at their layers
        (in layer order, so each edit sees the effect of the ones below it)."""
        if not edits:
            return self.model(**inputs).logits
        saved: dict[str, torch.Tensor] = {}
        with self._envoy.trace(**inputs):
            for index in sorted(edits):
                layer = self.layer(index)
                hidden_in = layer.input
                output = layer.output
                layer.output = _replace_hidden(output, edits[index](hidden_in, _hidden(output)))
            saved["logits"] = self._envoy.output.logits.save()
        return saved["logits"]
