"""An offline text tokenizer for ``debug`` and embedded models (no hub download).

Real checkpoints bring their own tokenizer (T5's sentencepiece). Models we build here
use a WordPiece vocabulary of music words plus single characters, so any text
tokenizes (unknown words fall back to characters) and caption words stay whole
tokens, which a tiny model learns from more easily than from bytes.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")

MUSIC_WORDS = (
    "a an the and with in of on at by for to is from this that its",
    "music song piece track melody tune chord chords beat rhythm loop groove",
    "played playing plays sound sounds sounding tone",
    "slow medium fast moderate tempo bpm quick steady",
    "major minor key mode happy sad bright dark",
    "low mid middle high register pitch bass treble",
    "quiet soft loud gentle strong dynamics",
    "piano organ flute guitar plucked string strings brass synth bell drums",
    "vocals voice instrumental acoustic electric",
    "rock pop jazz classical electronic folk hip hop ambient",
)
CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation


def build_text_tokenizer() -> PreTrainedTokenizerFast:
    """The deterministic tokenizer that debug and embedded models are built with."""
    vocab: dict[str, int] = {}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    words = [w for line in MUSIC_WORDS for w in line.split()]
    for token in [*words, *CHARACTERS, *(f"##{c}" for c in CHARACTERS)]:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=100))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # T5 appends </s> to every input; keep that convention.
    backend.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
