"""All nnsight access for YuE lives here.

Stage 1 is a ``LlamaForCausalLM``: decoder layer ``i`` is ``model.layers[i]`` and its
output is the residual stream after the block (a tensor in transformers 5, a tuple in
older versions: handled once, below). Passes trace the backbone (``model.model``):
the language-model head (83968 logits per position) is never needed for activations,
and teacher-forced cross-entropy applies it only at the positions whose labels count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from nnsight import NNsight
from transformers import PreTrainedModel

# An edit at a site: (layer input hidden_BLD, layer output hidden_BLD) -> new output, the
# contract MusicGen's tracer uses: seeing the input lets an edit skip a layer (return the
# input) or replace only the layer's own contribution (output - input).
SiteEdit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class YueTracer:
    """Teacher-forced passes that save decoder-layer outputs through nnsight."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.backbone = model.model
        self._envoy = NNsight(self.backbone)

    @property
    def input_device(self) -> torch.device:
        return self.backbone.get_input_embeddings().weight.device

    def layer_module(self, index: int) -> torch.nn.Module:
        """The plain module of layer ``index`` (for hooks outside nnsight, e.g. tests)."""
        return self.backbone.layers[index]

    @torch.no_grad()
    def layer_outputs(
        self, layers: list[int], input_ids_BL: torch.Tensor
    ) -> dict[int, torch.Tensor]:
        """Run the backbone once and return ``{layer: hidden_BLD}`` (every layer runs)."""
        saved: dict[int, torch.Tensor] = {}
        with self._envoy.trace(input_ids=input_ids_BL.to(self.input_device), use_cache=False):
            for index in layers:
                saved[index] = _hidden(self._envoy.layers[index].output).save()
        return {index: _hidden(value) for index, value in saved.items()}

    @torch.no_grad()
    def final_hidden_with_edits(
        self, edits: Mapping[int, SiteEdit], input_ids_BL: torch.Tensor
    ) -> torch.Tensor:
        """The backbone's last hidden state ``(B, L, D)`` (after the final norm, what the
        head reads) with ``edits`` applied at their layers, in layer order so that each
        edit sees the effect of the ones below it."""
        input_ids_BL = input_ids_BL.to(self.input_device)
        if not edits:
            return self.backbone(input_ids=input_ids_BL, use_cache=False).last_hidden_state
        saved: dict[str, torch.Tensor] = {}
        with self._envoy.trace(input_ids=input_ids_BL, use_cache=False):
            for index in sorted(edits):
                layer = self._envoy.layers[index]
                hidden_in = layer.input
                output = layer.output
                layer.output = _replace_hidden(output, edits[index](hidden_in, _hidden(output)))
            saved["hidden"] = self._envoy.output.last_hidden_state.save()
        return saved["hidden"]
