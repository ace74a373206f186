"""Measurement: can the audio descriptors tell major from minor, with one tonic and with
all twelve?

    python benchmarks/bench_mode_descriptors.py          # ~1 min on one core
    python benchmarks/bench_mode_descriptors.py --key-frame-seconds 0.064  # coarse chroma

For each tonic set (the synthetic corpus's ``tonics`` option: all 12 pitch classes, and
the default C alone) it renders ``--train`` training tracks (seed namespace 5) and
``--heldout`` held-out tracks (namespace 6: no note seed shared) of ``--seconds`` s at
``--sample-rate`` Hz, computes ``evidence.descriptors`` per track and scores the mode
(``mode:minor``) on the held-out tracks with the evidence recipe (``probe_scores``:
standardised features, L2 logistic regression, C by inner CV on the training tracks;
``bootstrap_auroc``: 95 % stratified bootstrap over held-out tracks). Feature sets:

- ``previous 66``: the descriptor vector before the key descriptors (its first 66
  columns, computed by the same code);
- ``key 4``: the key descriptors alone (``KEY_DESCRIPTOR_NAMES``);
- ``all``: the whole vector;
- ``key_major_minus_minor``: that one column, unfitted (its negative scores ``minor``).

Prints a Markdown table (docs/evaluation.md, "Audio descriptors").
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from musicsae_kedro.audio import synth
from musicsae_kedro.corpora.synthetic import SyntheticCorpus
from musicsae_kedro.evidence import (
    DescriptorConfig,
    bootstrap_auroc,
    descriptor_names,
    descriptors_TD,
    probe_scores,
)
from musicsae_kedro.evidence.descriptors import KEY_DESCRIPTOR_NAMES

TRAIN_NAMESPACE, HELDOUT_NAMESPACE = 5, 6


def corpus_descriptors(
    n_tracks: int, namespace: int, tonics: list[str], args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray]:
    """``(descriptors [T, D], is_minor [T])`` of a rendered synthetic corpus."""
    corpus = SyntheticCorpus(
        n_tracks=n_tracks,
        track_seconds=args.seconds,
        sample_rate=args.sample_rate,
        seed=0,
        seed_namespace=namespace,
        tonics=tonics,
    )
    tracks = list(corpus.tracks())
    audio = {t.track_id: corpus.read_audio(t)[0][0] for t in tracks}
    minor_T = np.array([t.meta["labels"]["mode"] == "minor" for t in tracks])
    cfg = DescriptorConfig(key_frame_seconds=args.key_frame_seconds)
    return descriptors_TD(audio, args.sample_rate, cfg).values_TD, minor_T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument(
        "--key-frame-seconds", type=float, default=DescriptorConfig().key_frame_seconds
    )
    args = parser.parse_args()
    names = descriptor_names()
    key_D = np.isin(names, KEY_DESCRIPTOR_NAMES)
    previous_D = np.arange(len(names)) < len(names) - len(KEY_DESCRIPTOR_NAMES)
    contrast = names.index("key_major_minus_minor")
    print(
        f"{args.train} training tracks (namespace {TRAIN_NAMESPACE}), {args.heldout} "
        f"held-out (namespace {HELDOUT_NAMESPACE}), {args.seconds:g} s at {args.sample_rate} Hz, "
        f"key spectrogram {args.key_frame_seconds:g} s"
    )
    print("| tonics | previous 66 | key 4 | all | key_major_minus_minor alone |")
    print("|---|---|---|---|---|")
    for label, tonics in (("all 12", list(synth.PITCH_CLASS_NAMES)), ("C (default)", ["C"])):
        start = time.perf_counter()
        train_TD, train_minor = corpus_descriptors(args.train, TRAIN_NAMESPACE, tonics, args)
        held_TD, held_minor = corpus_descriptors(args.heldout, HELDOUT_NAMESPACE, tonics, args)
        cells = []
        for columns_D in (previous_D, key_D, np.ones_like(key_D)):
            scores = probe_scores(train_TD[:, columns_D], train_minor[None], held_TD[:, columns_D])
            cells.append(bootstrap_auroc(scores.heldout_CU[0], held_minor).format())
        cells.append(bootstrap_auroc(-held_TD[:, contrast], held_minor).format())
        print(f"| {label} | {' | '.join(cells)} |  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
