"""All nnsight access for MusicGen lives here.

Decoder layer ``i`` is ``decoder.model.decoder.layers[i]``; its output is the residual
stream after the block (a tensor in transformers 5, a tuple in older versions:
handled once, below).

Generation (transformers 5.24, checked by tests/extract/test_generation_collection.py):
``generate(max_new_tokens=N)`` runs the decoder ``N + 1`` times: a prefill on the BOS
position whose result is discarded, then one run per input position ``0..N-1`` with a
KV cache. Under classifier-free guidance (``guidance_scale > 1``) the text encoder
states are ``[conditional; zeros]`` and the decoder ids are repeated, so decoder rows
``[:B]`` are conditional and ``[B:]`` unconditional. The delay pattern applies only
when ``N + 1 >= 2K - 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from nnsight import NNsight
from transformers import MusicgenForConditionalGeneration
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList

from musicsae_kedro.models.generation import EditRows, GeneratedSteps, GenerationEdit

# An edit at a site: (layer input hidden_BLD, layer output hidden_BLD) -> new output.
# Seeing the input lets an edit skip a layer (return the input) or replace only the
# layer's own contribution (output - input).
SiteEdit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class _TokenRecorder(StoppingCriteria):
    """A stopping criterion that never stops: it keeps the token ids after each step.

    ``generate`` returns the waveform only, and MusicGen's ``generate`` does not hand its
    ``streamer`` to the sampling loop (transformers 5.24); stopping criteria see the
    whole sequence, the last sampled token included (no decoder run reads that one).
    """

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.last = input_ids.detach()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


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

    def decoder_runs(self, max_new_tokens: int) -> int:
        """Decoder forward passes ``generate(max_new_tokens=...)`` makes (see the module doc)."""
        return max_new_tokens + 1

    @staticmethod
    def run_positions(n_runs: int) -> np.ndarray:
        """Input position of each run: the discarded prefill and run 1 both read BOS."""
        return np.maximum(np.arange(n_runs) - 1, 0)

    @torch.no_grad()
    def generate(
        self,
        layers: list[int],
        max_new_tokens: int,
        edit: GenerationEdit | None = None,
        edit_layers: list[int] | None = None,
        edit_rows: EditRows = "conditional",
        **generate_kwargs: Any,
    ) -> GeneratedSteps:
        """Generate, saving the outputs of ``layers`` at every decoder run.

        The per-run loop is bounded by ``decoder_runs(max_new_tokens)`` (an unbounded
        ``iter``/``all()`` never returns). Only conditional rows are saved. ``edit`` runs
        at every run on each of ``edit_layers`` (default: ``layers``), in layer order, on
        the conditional rows (``edit_rows: all``: every row) before the output moves on
        (saved rows are the edited ones); it sees the run's input position.
        """
        batch = int(generate_kwargs["input_ids"].shape[0])
        n_runs = self.decoder_runs(max_new_tokens)
        positions_R = self.run_positions(n_runs)
        hidden: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        edited = set(layers if edit_layers is None else edit_layers) if edit else set()
        visited = sorted(set(layers) | edited)  # nnsight needs modules in execution order
        rows = slice(None) if edit_rows == "all" else slice(0, batch)
        ids: list[torch.Tensor] = []
        saved: dict[str, Any] = {}
        recorder = _TokenRecorder()
        with self._envoy.trace(
            fn="generate",
            max_new_tokens=max_new_tokens,
            return_dict_in_generate=True,
            stopping_criteria=StoppingCriteriaList([recorder]),
            **generate_kwargs,
        ) as tracer:
            for run in tracer.iter[:n_runs]:
                ids.append(self._envoy.decoder.inputs[1]["input_ids"].save())
                for index in visited:
                    h_BLD = _hidden(self.layer(index).output)
                    if edit is not None and index in edited:
                        h_BLD[rows] = edit(int(positions_R[run]), index, h_BLD[rows])
                    if index in hidden:
                        hidden[index].append(h_BLD[:batch].clone().save())
            saved["result"] = tracer.result.save()
        runs_seen = len(ids)
        if runs_seen != n_runs:
            raise RuntimeError(
                f"the decoder ran {runs_seen} times for max_new_tokens={max_new_tokens}, "
                f"expected {n_runs}: this transformers version generates differently"
            )
        n_codebooks = self.model.decoder.num_codebooks
        if recorder.last is None:
            raise RuntimeError("generate ran no sampling step: no tokens to return")
        tokens = recorder.last.cpu()
        return GeneratedSteps(
            audio_BCS=saved["result"].sequences.float().cpu().numpy(),
            hidden={index: torch.cat(steps, dim=1) for index, steps in hidden.items()},
            positions_R=positions_R,
            input_ids=torch.cat(
                [i[: batch * n_codebooks].reshape(batch, n_codebooks, -1) for i in ids], dim=-1
            ),
            tokens=tokens[: batch * n_codebooks].reshape(batch, n_codebooks, -1),
        )
