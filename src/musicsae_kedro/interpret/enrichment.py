"""The offline labeller: which tags and caption words are over-represented among a
feature's top units, against all units of the (training) corpus.

For a candidate feature with ``n`` active top units, and a term (a tag such as
``instrument:piano``, or a caption word) carried by ``K`` of the ``M`` corpus units and
by ``k`` of the top units:

- ``p``: hypergeometric upper tail ``P(X >= k)``, ``X ~ Hypergeom(M, K, n)`` (drawing the
  top units at random from the corpus would give ``k`` or more carriers with chance p);
- ``q``: Benjamini-Hochberg adjusted ``p`` over every tested (candidate, term) pair of
  the site: terms with ``k >= 1`` (terms no top unit carries cannot be over-represented);
- ``log_odds``: log odds ratio of carrying the term, top units against the other units
  (Haldane-Anscombe +0.5 correction);
- ``support``: ``k / n``.

The label joins the best terms (lowest p, then highest log odds; tags before caption
words) that have ``q < alpha``, at most ``max_terms`` and at most one per tag category.
Terms carried by exactly the same corpus units (a caption word that repeats a tag value)
are one hypothesis: only one of them is tested, the tag if there is one. Confidence:
``high`` when the best term has ``q < alpha / 5`` and support >= 0.8, ``medium`` when
``q < alpha`` and support >= 0.5, ``low`` otherwise (then the label is the single best
term, shown as weak evidence).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from musicsae_kedro.interpret.config import EnrichmentConfig
from musicsae_kedro.interpret.labels import TAG_SOURCE, as_list, label_row, label_table
from musicsae_kedro.interpret.stats_store import FeatureStats

logger = logging.getLogger(__name__)

CAPTION_CATEGORY = "caption"
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "with",
        "was",
        "were",
        "which",
        "while",
        "who",
        "will",
        "piece",
        "track",
        "song",
        "music",
        "sound",
        "sounds",
    }
)
_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)


@dataclass(frozen=True)
class Term:
    """A tag or caption word that units can carry."""

    kind: str
    """``tag`` or ``caption``."""
    text: str
    """The tag as written (``instrument:piano``) or the lower-cased word."""

    @property
    def category(self) -> str:
        """Tag category (``instrument``), the tag itself when it has none, or ``caption``."""
        if self.kind == "caption":
            return CAPTION_CATEGORY
        category, sep, _ = self.text.partition(":")
        return category.strip() if sep else self.text

    @property
    def display(self) -> str:
        """How the term reads in a label: ``instrument: piano``, ``live``, ``"bright"``."""
        if self.kind == "caption":
            return f'"{self.text}"'
        category, sep, value = self.text.partition(":")
        return f"{category.strip()}: {value.strip()}" if sep else self.text


def caption_words(caption: str, min_length: int) -> set[str]:
    """Distinct lower-cased words of a caption, without stopwords and short words."""
    words = {w.lower().strip("'-") for w in _WORD.findall(caption or "")}
    return {w for w in words if len(w) >= min_length and w not in STOPWORDS}


class TermIndex:
    """Which terms each corpus unit carries, and how many units carry each term."""

    def __init__(self, unit_terms: Sequence[Iterable[Term]]) -> None:
        self.terms: list[Term] = []
        ids: dict[Term, int] = {}
        self.unit_term_ids: list[np.ndarray] = []
        for terms in unit_terms:
            row = sorted({ids.setdefault(t, len(ids)) for t in terms})
            self.unit_term_ids.append(np.asarray(row, dtype=np.int64))
        self.terms = sorted(ids, key=ids.__getitem__)
        self.n_units = len(self.unit_term_ids)
        self.count_V = np.zeros(len(self.terms), dtype=np.int64)
        for row in self.unit_term_ids:
            self.count_V[row] += 1
        # Terms carried by exactly the same units are one hypothesis (a caption word that
        # repeats a tag value): only one of them, a tag if there is one, is tested.
        carriers: dict[int, list[int]] = {}
        for unit, row in enumerate(self.unit_term_ids):
            for term in row:
                carriers.setdefault(int(term), []).append(unit)
        groups: dict[tuple[int, ...], list[int]] = {}
        for term, units in carriers.items():
            groups.setdefault(tuple(units), []).append(term)
        self.tested_V = np.zeros(len(self.terms), dtype=bool)
        for members in groups.values():
            best = min(members, key=lambda t: (self.terms[t].kind != "tag", self.terms[t].text))
            self.tested_V[best] = True

    def counts_in(self, units: Sequence[int]) -> dict[int, int]:
        """``term id -> number of the given units carrying it`` (tested terms only)."""
        counts: dict[int, int] = {}
        for unit in units:
            for term in self.unit_term_ids[unit]:
                if self.tested_V[term]:
                    counts[int(term)] = counts.get(int(term), 0) + 1
        return counts


def unit_terms_from_tracks(
    stats: FeatureStats, tracks: pd.DataFrame, cfg: EnrichmentConfig
) -> list[set[Term]]:
    """The terms of every unit of ``stats``: its track's tags (+ caption words)."""
    by_id = tracks.set_index("track_id")
    per_track: list[set[Term]] = []
    for track_id in stats.track_ids:
        terms: set[Term] = set()
        if track_id in by_id.index:
            row = by_id.loc[track_id]
            terms |= {Term("tag", t) for t in as_list(row.get("tags")) if t}
            if cfg.caption_words:
                caption = row.get("caption") or ""
                terms |= {Term("caption", w) for w in caption_words(caption, cfg.min_word_length)}
        per_track.append(terms)
    return [per_track[int(t)] for t in stats.units.track_U]


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH-adjusted q-values (monotone, capped at 1)."""
    m = p_values.size
    if m == 0:
        return p_values.copy()
    order = np.argsort(p_values, kind="stable")
    ranked = p_values[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m, dtype=np.float64)
    q[order] = np.minimum(ranked, 1.0)
    return q


def _log_odds(k: int, n: int, big_k: int, m: int) -> float:
    inside = (k + 0.5) / (n - k + 0.5)
    outside = (big_k - k + 0.5) / ((m - n) - (big_k - k) + 0.5)
    return math.log(inside / outside)


def enrichment_labels(
    stats: FeatureStats,
    features: Sequence[int],
    unit_terms: Sequence[Iterable[Term]],
    cfg: EnrichmentConfig,
) -> pd.DataFrame:
    """One ``tag_enrichment`` label row per feature (see the module docs)."""
    index = TermIndex(unit_terms)
    big_m = index.n_units
    tests: list[tuple[int, int, int, int, float, float]] = []  # feature, term, k, n, p, lo
    top_units: dict[int, list[int]] = {}
    for feature in features:
        units = [u for u, _ in stats.top_units(int(feature))]
        top_units[int(feature)] = units
        n = len(units)
        for term, k in index.counts_in(units).items():
            big_k = int(index.count_V[term])
            p = float(hypergeom.sf(k - 1, big_m, big_k, n))
            tests.append((int(feature), term, k, n, p, _log_odds(k, n, big_k, big_m)))
    q_all = benjamini_hochberg(np.array([t[4] for t in tests], dtype=np.float64))
    by_feature: dict[int, list[dict]] = {}
    for (feature, term, k, n, p, lo), q in zip(tests, q_all):
        by_feature.setdefault(feature, []).append(
            {"term": term, "k": k, "n": n, "p": p, "q": float(q), "log_odds": lo}
        )
    kind_order = {"tag": 0, "caption": 1}
    rows = []
    for feature in features:
        feature = int(feature)
        evidence = list(dict.fromkeys(stats.unit_track_id(u) for u in top_units[feature]))
        found = by_feature.get(feature, [])
        if not found:
            rows.append(
                label_row(
                    feature,
                    TAG_SOURCE,
                    status="no_evidence",
                    evidence_tracks=evidence,
                    error="no active top unit carries a tag or caption word",
                )
            )
            continue
        found.sort(
            key=lambda r: (
                r["p"],
                -r["log_odds"],
                kind_order[index.terms[r["term"]].kind],
                index.terms[r["term"]].text,
            )
        )
        chosen = _choose_terms(found, index, cfg)
        best = chosen[0]
        n_top = best["n"]
        support = best["k"] / n_top
        if best["q"] < cfg.alpha / 5 and support >= 0.8:
            confidence = "high"
        elif best["q"] < cfg.alpha and support >= 0.5:
            confidence = "medium"
        else:
            confidence = "low"
        unit_name = stats.unit
        description = "; ".join(
            f"{r['k']}/{r['n']} top training {unit_name}s have "
            f"{index.terms[r['term']].display} (vs {int(index.count_V[r['term']])}/{big_m} "
            f"of all; q={r['q']:.2g})"
            for r in chosen
        )
        terms_json = json.dumps(
            [
                {
                    "term": index.terms[r["term"]].text,
                    "kind": index.terms[r["term"]].kind,
                    "k": r["k"],
                    "n": r["n"],
                    "K": int(index.count_V[r["term"]]),
                    "M": big_m,
                    "p": r["p"],
                    "q": r["q"],
                    "log_odds": r["log_odds"],
                    "chosen": any(r is c for c in chosen),
                }
                for r in found[:20]
            ]
        )
        rows.append(
            label_row(
                feature,
                TAG_SOURCE,
                label=", ".join(index.terms[r["term"]].display for r in chosen),
                description=description,
                confidence=confidence,
                statistic="hypergeometric q (Benjamini-Hochberg)",
                statistic_value=best["q"],
                log_odds=best["log_odds"],
                support=support,
                evidence_tracks=evidence,
                terms_json=terms_json,
            )
        )
    logger.info(
        "%s: tag enrichment labelled %d features (%d tests)", stats.site, len(rows), len(tests)
    )
    return label_table(rows)


def _choose_terms(found: list[dict], index: TermIndex, cfg: EnrichmentConfig) -> list[dict]:
    """Best significant terms, one per category; else the single best term."""
    chosen: list[dict] = []
    categories: set[str] = set()
    for r in found:
        if r["q"] >= cfg.alpha or len(chosen) == cfg.max_terms:
            break
        term = index.terms[r["term"]]
        if term.category in categories:
            continue
        chosen.append(r)
        categories.add(term.category)
    return chosen or [found[0]]
