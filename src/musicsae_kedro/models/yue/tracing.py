"""All nnsight access for YuE lives here.

Stage 1 is a ``LlamaForCausalLM``: decoder layer ``i`` is ``model.layers[i]`` and its
output is the residual stream after the block (a tensor in transformers 5, a tuple in
older versions: handled once, below). Passes trace the backbone (``model.model``):
the language-model head (83968 logits per position) is never needed for activations.
"""

from __future__ import annotations

import torch
from nnsight import NNsight
from transformers import PreTrainedModel


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


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
