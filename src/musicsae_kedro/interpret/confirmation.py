"""Tag-enrichment labels confirmed on held-out tracks: ``ok`` or ``weak``.

A label is chosen on training units (``enrichment``). Its test is then repeated on the
held-out units, which took no part in choosing it: for each term of the label, the
hypergeometric upper tail of ``k`` carriers among the feature's ``n`` active held-out
top units, against ``K`` of the ``M`` held-out units. A label holds only when every term
holds, so its held-out p is the largest p of its terms (intersection-union test). The
q-values are Benjamini-Hochberg over the labels tested on held-out units (those whose
training test was significant). A label is ``ok`` when its held-out q is below
``alpha``, else ``weak`` (labels not significant on training units are ``weak``
untested).

Beside it, the held-out AUROC of the feature's unit means for the label's first term,
with a stratified bootstrap 95 % interval: how well the feature separates the held-out
units carrying the term from the others, over all units rather than the top ones.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from musicsae_kedro.evidence.intervals import bootstrap_auroc
from musicsae_kedro.interpret.config import EnrichmentConfig
from musicsae_kedro.interpret.enrichment import Term, TermIndex, benjamini_hochberg
from musicsae_kedro.interpret.labels import OK, TAG_SOURCE, WEAK
from musicsae_kedro.interpret.stats_store import FeatureStats

logger = logging.getLogger(__name__)


def chosen_terms(terms_json: str) -> list[Term]:
    """The terms a tag-enrichment label was made of, in label order."""
    if not terms_json:
        return []
    return [Term(t["kind"], t["term"]) for t in json.loads(terms_json) if t.get("chosen")]


def _heldout_p(
    index: TermIndex,
    carriers: list[set[int]],
    ids: dict[Term, int],
    terms: list[Term],
    top: list[int],
) -> float:
    m, n = index.n_units, len(top)
    worst = 0.0
    for term in terms:
        t = ids.get(term, -1)
        big_k = int(index.count_V[t]) if t >= 0 else 0
        k = sum(t in carriers[u] for u in top)
        p = float(hypergeom.sf(k - 1, m, big_k, n)) if n and big_k and k else 1.0
        worst = max(worst, p)
    return worst


def confirm_on_heldout(
    labels: pd.DataFrame,
    heldout: FeatureStats,
    unit_terms: Sequence[Iterable[Term]],
    cfg: EnrichmentConfig,
) -> pd.DataFrame:
    """``labels`` with held-out p, q, AUROC and interval, and ``ok``/``weak`` statuses of
    the tag-enrichment labels (other rows unchanged)."""
    table = labels.copy()
    if table.empty:
        return table
    index = TermIndex(unit_terms)
    ids = {term: i for i, term in enumerate(index.terms)}
    carriers = [set(u.tolist()) for u in index.unit_term_ids]
    rows = table.index[table["source"].eq(TAG_SOURCE) & table["status"].isin((OK, WEAK))]
    tested, p_values = [], []
    for row in rows:
        feature = int(table.at[row, "feature"])
        terms = chosen_terms(str(table.at[row, "terms_json"]))
        if not terms:
            continue
        carries_U = np.array([ids.get(terms[0], -1) in c for c in carriers], dtype=bool)
        means_U = heldout.feature_means(feature, feature + 1)[:, 0]
        interval = bootstrap_auroc(
            means_U, carries_U, n_resamples=cfg.bootstrap_resamples, seed=cfg.seed
        )
        table.at[row, "heldout_auroc"] = interval.point
        table.at[row, "heldout_auroc_low"] = interval.low
        table.at[row, "heldout_auroc_high"] = interval.high
        training_q = float(table.at[row, "statistic_value"])
        if not (math.isfinite(training_q) and training_q < cfg.alpha):
            continue
        top = [u for u, _ in heldout.top_units(feature)]
        tested.append(row)
        p_values.append(_heldout_p(index, carriers, ids, terms, top))
    q_values = benjamini_hochberg(np.asarray(p_values, dtype=np.float64))
    for row, p, q in zip(tested, p_values, q_values):
        table.at[row, "heldout_p"] = p
        table.at[row, "heldout_q"] = float(q)
    held_q = table.loc[rows, "heldout_q"]
    table.loc[rows, "status"] = np.where(held_q.lt(cfg.alpha), OK, WEAK)
    n_ok = int(table.loc[rows, "status"].eq(OK).sum())
    logger.info(
        "%s: %d of %d tag labels confirmed on %d held-out %ss (q < %g; %d tested there), %d weak",
        heldout.site,
        n_ok,
        len(rows),
        heldout.n_units,
        heldout.unit,
        cfg.alpha,
        len(tested),
        len(rows) - n_ok,
    )
    return table
