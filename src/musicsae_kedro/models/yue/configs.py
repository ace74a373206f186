"""YuE stage 1: the real checkpoints' structure, its token layout, and the ``debug`` copy.

Facts from YuE's own inference code (``inference/infer.py``, ``codecmanipulator.py``,
``mmtokenizer.py`` in multimodal-art-projection/YuE) and the stage-1 ``config.json``:

- Stage 1 is a ``LlamaForCausalLM``; decoder layer ``i`` is ``model.layers[i]``.
- Vocabulary (mm tokenizer v0.2): text tokens ``0..31999`` (LLaMA sentencepiece),
  special tokens ``32000..32021`` (``<SOA>`` 32001, ``<EOA>`` 32002, ``<stage_1>`` 32013,
  ``<xcodec>`` 32016, ...), codec tokens from 32022 on; X-Codec codebook ``k`` sits at
  ``45334 + 1024 k`` (12 codebooks of 1024). The embedding matrix is padded to 83968 rows.
- Stage 1 reads X-Codec codebook 0 only (``target_bw=0.5``: one codebook at 50 tokens/s
  of 16 kHz audio), vocal and instrumental stems interleaved frame by frame (vocal first).
- An audio segment is ``<SOA> <xcodec> v0 i0 v1 i1 ... <EOA>``. (``<stage_1>`` marks
  stage 1's output inside stage 2's prompt, not stage 1's own input.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import field_validator
from transformers import LlamaConfig

from musicsae_kedro.config import ParamsModel, parse_params
from musicsae_kedro.models.yue.layout import DEBUG_LAYERS

# --------------------------------------------------------------------------- tokens

SPECIAL_TOKENS = {
    "<EOD>": 32000,
    "<SOA>": 32001,
    "<EOA>": 32002,
    "<SOI>": 32003,
    "<EOI>": 32004,
    "<SOV>": 32005,
    "<EOV>": 32006,
    "<s_local>": 32007,
    "<e_local>": 32008,
    "<s_global>": 32009,
    "<e_global>": 32010,
    "<semantic>": 32011,
    "<acoustic>": 32012,
    "<stage_1>": 32013,
    "<dac_16k>": 32014,
    "<dac_44k>": 32015,
    "<xcodec>": 32016,
    "<stage_2>": 32017,
    "<semantic_mert>": 32018,
    "<semantic_hubert>": 32019,
    "<visual>": 32020,
    "<semanticodec>": 32021,
}
TEXT_VOCAB_SIZE = 32000
"""Text tokens are ``0..31999``; a debug tokenizer must stay below this."""
XCODEC_GLOBAL_OFFSET = 45334
XCODEC_CODEBOOK_SIZE = 1024
XCODEC_NUM_CODEBOOKS = 12
XCODEC_SAMPLE_RATE = 16000
XCODEC_FRAME_RATE = 50
XCODEC_TARGET_BW = 0.5
"""kbps: one codebook of 1024 (10 bits) at 50 Hz; what stage 1 is trained on."""

PROMPT_INSTRUCTION = "Generate music from the given lyrics segment by segment."
START_OF_SEGMENT = "[start_of_segment]"
END_OF_SEGMENT = "[end_of_segment]"

# Structural fields of m-a-p/YuE-s1-7B-* (config.json of the stage-1 checkpoints).
YUE_S1_STRUCTURE: dict[str, Any] = {
    "vocab_size": 83968,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "max_position_embeddings": 16384,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
}
# Widths of the real stage-1 checkpoints: (hidden, layers, heads, kv heads, ffn).
YUE_S1_SIZES = {
    "m-a-p/YuE-s1-7B-anneal-en-cot": (4096, 32, 32, 4, 11008),
    "m-a-p/YuE-s1-7B-anneal-en-icl": (4096, 32, 32, 4, 11008),
}


def debug_config(n_layers: int = DEBUG_LAYERS, hidden: int = 64) -> LlamaConfig:
    """A tiny random-weight stage 1 with the real vocabulary, ids, context and GQA ratio."""
    return LlamaConfig(
        **YUE_S1_STRUCTURE,
        hidden_size=hidden,
        intermediate_size=int(hidden * 11008 / 4096),
        num_hidden_layers=n_layers,
        num_attention_heads=8,
        num_key_value_heads=1,  # the real 32:4 ratio
        head_dim=hidden // 8,
    )


# --------------------------------------------------------------------------- options


class CodecSource(ParamsModel):
    """Where YuE's X-Codec comes from."""

    path: str = "debug"
    """``debug`` (a small random codec built in memory, deterministic by the model seed),
    a directory written by ``save_debug_codec`` (safetensors + JSON, no pickle), or a
    checkout of YuE's ``xcodec_mini_infer`` (its code + ``final_ckpt``: a pickle)."""
    trusted: bool = False
    """Allow loading ``xcodec_mini_infer``: it unpickles the checkpoint and imports the
    checkout's Python code, which can run anything. Set only for a local copy you trust."""
    checkpoint: str | None = None
    """``xcodec_mini_infer`` checkpoint, relative to ``path`` (default: the single
    ``final_ckpt/*.pth``)."""
    config: str = "final_ckpt/config.yaml"
    """``xcodec_mini_infer`` model config, relative to ``path``."""


StemsMode = Literal["separate", "mix_as_instrumental"]


class YueOptions(ParamsModel):
    """``models.<key>.options`` of a ``family: yue`` model."""

    codec: CodecSource = CodecSource()
    """YuE's own X-Codec (not a transformers X-Codec port: their weights differ); a
    string is its ``path``."""
    tokenizer: str | None = None
    """Text tokenizer: ``debug``, or a local folder transformers can load (YuE's
    ``mm_tokenizer_v0.2_hf`` converted once to ``tokenizer.json``). Default: ``debug``
    for the debug model, else the model's own folder / hub id."""
    stems: StemsMode = "separate"
    """``separate``: codes come from vocals and instrumental stems (``encode_stems``).
    ``mix_as_instrumental``: ``encode_audio(mix)`` encodes the mix as the instrumental
    stem beside a silent vocal stem (recorded in the provenance); for corpora without
    stems, and not what YuE saw in training."""
    device_map: str | None = None
    """``device_map`` for ``from_pretrained`` (e.g. ``auto`` to spread the 7B model over
    GPUs); None: the whole model on ``device``."""

    @field_validator("codec", mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str) -> YueOptions:
        """The ``models.<key>.options`` block (``where`` names it in errors)."""
        return parse_params(cls, raw, where)
