"""YuE stage-1 generation with per-step edits: an explicit KV-cache loop.

The loop mirrors what YuE's ``infer.py`` asks of transformers' ``generate`` for the
first segment of a song, bounded to a fixed number of frames:

- the prompt is the teacher-forced layout's prefix (``clip_sequence``: instruction,
  genres, lyrics, ``[start_of_segment]``, segment, ``<SOA> <xcodec>``); the loop then
  samples ``v0 i0 v1 i1 ...`` (vocal first), one token per decoder run, restricted to
  X-Codec codebook 0 (what stage 1 emits; YuE's ``BlockTokenRangeProcessor`` blocks the
  rest), and stops after ``n_frames`` frames instead of waiting for ``<EOA>``;
- classifier-free guidance is transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``
  (what ``guidance_scale`` does for a decoder-only model): a *second* model call, with its
  own cache, on the unconditional sequence ``<xcodec> v0 i0 ...`` (the prompt's last token,
  then every sampled token), combined as ``g * (log p_c - log p_u) + log p_u``.

Runs (of the conditional call): run 0 is the prefill, whose last input is ``<xcodec>``
(window position 1, see ``adapter.py``); run ``r >= 1`` reads window position ``r + 1``
(``v_t`` at ``2 + 2t``, ``i_t`` at ``3 + 2t``). Run ``2T`` reads ``i(T-1)``: its rows
are kept (the teacher-forced layout stores that position) and it samples nothing.
So a generation of ``T`` frames makes ``2T + 1`` conditional runs (and as many
unconditional ones under guidance) and samples ``2T`` tokens.

Edits (``GenerationEdit``) act at the runs whose input token's window position is a
stored position of the policy (default ``instrumental``: runs reading ``i_t``), on the
conditional call (``edit_rows: all``: on the unconditional call too, at the same
positions); the prefill (prompt text) is never edited. YuE's ``repetition_penalty`` and
``top_p`` are not applied: sampling uses ``GenerationSettings`` (temperature, top-k).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel

from musicsae_kedro.models.generation import EditRows, GenerationEdit, GenerationSettings
from musicsae_kedro.models.yue.configs import XCODEC_CODEBOOK_SIZE, XCODEC_GLOBAL_OFFSET
from musicsae_kedro.models.yue.tokens import EOA, XCODEC

FIRST_AUDIO_WINDOW_POSITION = 2
"""Window position of ``v0`` (``<SOA>`` is 0, ``<xcodec>`` 1)."""


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: torch.Tensor | tuple, hidden: torch.Tensor) -> torch.Tensor | tuple:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@dataclass
class YueSteps:
    """What a generation saw: conditional rows of every run, and the sampled codes."""

    hidden: dict[int, torch.Tensor]
    """``{layer: [B, R, D]}``: the last position's row of every conditional run."""
    window_positions_R: np.ndarray
    """Window position of the input token each run's kept row belongs to."""
    codes_B2T: torch.Tensor
    """Sampled X-Codec codebook-0 codes (offset removed), ``[B, 2 (vocal, inst), T]``."""
    edited_calls: dict[str, int]
    """Model calls the edit acted at, per call (``conditional``, ``unconditional``)."""


class _Call:
    """One model call stream (conditional or unconditional) with its KV cache."""

    def __init__(self, model: PreTrainedModel, ids_BL: torch.Tensor, mask_BL: torch.Tensor):
        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.mask_BL = mask_BL
        self.next_ids_BL = ids_BL
        self.next_pos_B = mask_BL.sum(dim=1)  # position of the first token to append

    def run(self) -> torch.Tensor:
        """Run the pending tokens; return the next-token logits ``[B, V]`` (float32)."""
        length = self.next_ids_BL.shape[1]
        if self.cache.get_seq_length() == 0:
            position_BL = (self.mask_BL.cumsum(dim=1) - 1).clamp(min=0)
        else:
            position_BL = self.next_pos_B[:, None] + torch.arange(
                length, device=self.mask_BL.device
            )
            self.next_pos_B = self.next_pos_B + length
        out = self.model.model(
            input_ids=self.next_ids_BL,
            attention_mask=self.mask_BL,
            position_ids=position_BL,
            cache=self.cache,
            use_cache=True,
        )
        head = self.model.get_output_embeddings()
        return head(out.last_hidden_state[:, -1]).float()

    def append(self, ids_B: torch.Tensor) -> None:
        self.next_ids_BL = ids_B[:, None]
        ones = torch.ones_like(self.mask_BL[:, :1])
        self.mask_BL = torch.cat([self.mask_BL, ones], dim=1)


class _SiteHooks:
    """Forward hooks on decoder layers: keep and/or edit their output at the current run."""

    def __init__(self, model: PreTrainedModel, layers: list[int], edit_layers: list[int]):
        self.layers = model.model.layers
        self.keep = set(layers)
        self.edit_layers = set(edit_layers)
        self.edit: GenerationEdit | None = None
        self.position = -1
        self.record = False
        self.kept: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    @contextmanager
    def installed(self) -> Iterator[None]:
        handles = [
            self.layers[index].register_forward_hook(self._hook(index))
            for index in sorted(self.keep | self.edit_layers)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, index: int):
        def hook(_module: torch.nn.Module, _args: tuple, output: torch.Tensor | tuple):
            h_BLD = _hidden(output)
            if self.edit is not None and index in self.edit_layers:
                # only the last row: earlier rows of the prefill are prompt text
                last_B1D = self.edit(self.position, index, h_BLD[:, -1:])
                h_BLD = torch.cat([h_BLD[:, :-1], last_B1D.to(h_BLD.dtype)], dim=1)
                output = _replace_hidden(output, h_BLD)
            if self.record and index in self.keep:
                self.kept[index].append(h_BLD[:, -1:].detach().clone())
            return output

        return hook


def _sample(
    scores_BV: torch.Tensor, settings: GenerationSettings, generator: torch.Generator
) -> torch.Tensor:
    """Codebook-0 slice of the (guided) log-probabilities -> sampled codes ``[B]``."""
    if not settings.do_sample:
        return scores_BV.argmax(dim=-1)
    scores_BV = scores_BV / settings.temperature
    k = min(settings.top_k, scores_BV.shape[-1]) if settings.top_k > 0 else scores_BV.shape[-1]
    top_BK, index_BK = scores_BV.topk(k, dim=-1)
    probs_BK = torch.softmax(top_BK, dim=-1)
    choice_B1 = torch.multinomial(probs_BK, 1, generator=generator)
    return index_BK.gather(1, choice_B1)[:, 0]


def left_pad(prefixes: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths -> ``(ids_BL, mask_BL)``, padded on the left so
    every prompt ends at the last column (the positions skip the padding)."""
    length = max(len(p) for p in prefixes)
    ids_BL = torch.full((len(prefixes), length), EOA, dtype=torch.long)
    mask_BL = torch.zeros((len(prefixes), length), dtype=torch.long)
    for b, prefix in enumerate(prefixes):
        ids_BL[b, length - len(prefix) :] = torch.as_tensor(prefix)
        mask_BL[b, length - len(prefix) :] = 1
    return ids_BL.to(device), mask_BL.to(device)


@torch.no_grad()
def generate_steps(
    model: PreTrainedModel,
    prefixes: list[np.ndarray],
    n_frames: int,
    settings: GenerationSettings,
    edit_positions: np.ndarray,
    layers: list[int],
    seed: int,
    edit: GenerationEdit | None = None,
    edit_layers: list[int] | None = None,
    edit_rows: EditRows = "conditional",
) -> YueSteps:
    """Generate ``n_frames`` frames after each prompt prefix (ending ``<SOA> <xcodec>``).

    ``edit_positions``: window positions where ``edit`` acts (see the module doc).
    Sampling draws from a generator seeded by ``seed``: a rerun samples the same codes.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    device = model.get_input_embeddings().weight.device
    ids_BL, mask_BL = left_pad(prefixes, device)
    batch = ids_BL.shape[0]
    guided = settings.guidance_scale != 1.0
    conditional = _Call(model, ids_BL, mask_BL)
    unconditional = (
        _Call(
            model,
            torch.full((batch, 1), XCODEC, dtype=torch.long, device=device),
            torch.ones((batch, 1), dtype=torch.long, device=device),
        )
        if guided
        else None
    )
    edited = [] if edit is None else (layers if edit_layers is None else edit_layers)
    hooks = _SiteHooks(model, layers, list(edited))
    edit_at = {int(p) for p in edit_positions}
    generator = torch.Generator(device=device).manual_seed(int(seed))
    calls = {"conditional": 0, "unconditional": 0}
    n_runs = 2 * n_frames + 1
    sampled: list[torch.Tensor] = []
    audio = slice(XCODEC_GLOBAL_OFFSET, XCODEC_GLOBAL_OFFSET + XCODEC_CODEBOOK_SIZE)
    with hooks.installed():
        for run in range(n_runs):  # bounded: one run per input position, no stop token
            position = run + 1
            acts = edit is not None and position in edit_at
            hooks.position, hooks.record = position, True
            hooks.edit = edit if acts else None
            logits_BV = conditional.run()
            calls["conditional"] += int(acts)
            if run == n_runs - 1:
                break  # the last run reads i(T-1) for its rows only
            scores_BV = torch.log_softmax(logits_BV, dim=-1)
            if unconditional is not None:
                hooks.record = False
                hooks.edit = edit if acts and edit_rows == "all" else None
                uncond_BV = torch.log_softmax(unconditional.run(), dim=-1)
                calls["unconditional"] += int(acts and edit_rows == "all")
                g = settings.guidance_scale
                scores_BV = g * (scores_BV - uncond_BV) + uncond_BV
            code_B = _sample(scores_BV[:, audio], settings, generator)
            sampled.append(code_B)
            token_B = code_B + XCODEC_GLOBAL_OFFSET
            conditional.append(token_B)
            if unconditional is not None:
                unconditional.append(token_B)
    codes_BN = torch.stack(sampled, dim=1).cpu()
    return YueSteps(
        hidden={layer: torch.cat(rows, dim=1) for layer, rows in hooks.kept.items()},
        window_positions_R=np.arange(n_runs, dtype=np.int64) + 1,
        codes_B2T=codes_BN.reshape(batch, n_frames, 2).transpose(1, 2).contiguous(),
        edited_calls=calls,
    )
