"""Ranking, refusal and calibration metrics, plain numpy, checked against hand-computed values.

Rankings are lists of ids, best first; `relevant` maps id -> graded relevance (> 0 relevant).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Mapping, Sequence

import numpy as np


def hit_at(ranking: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    return float(any(relevant.get(d, 0) > 0 for d in ranking[:k]))


def mrr_at(ranking: Sequence[str], relevant: Mapping[str, float], k: int = 10) -> float:
    for i, d in enumerate(ranking[:k], start=1):
        if relevant.get(d, 0) > 0:
            return 1.0 / i
    return 0.0


def ndcg_at(ranking: Sequence[str], relevant: Mapping[str, float], k: int = 10) -> float:
    """nDCG with linear gains (BEIR / pytrec_eval convention)."""
    dcg = sum(relevant.get(d, 0) / math.log2(i + 1) for i, d in enumerate(ranking[:k], start=1))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranking: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    positives = {d for d, g in relevant.items() if g > 0}
    if not positives:
        return 0.0
    return len(positives & set(ranking[:k])) / len(positives)


def auroc(scores_positive: Sequence[float], scores_negative: Sequence[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting half."""
    pos = np.asarray(scores_positive, dtype=np.float64)
    neg = np.asarray(scores_negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def reliability(probs: Sequence[float], labels: Sequence[int], n_bins: int = 10) -> dict:
    """Equal-width bins: per-bin mean confidence, accuracy and count, and the expected calibration error."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        if n == 0:
            bins.append({"lo": edges[b], "hi": edges[b + 1], "count": 0, "confidence": None, "accuracy": None})
            continue
        conf, acc = float(p[mask].mean()), float(y[mask].mean())
        ece += n / len(p) * abs(conf - acc)
        bins.append({"lo": edges[b], "hi": edges[b + 1], "count": n, "confidence": conf, "accuracy": acc})
    return {"ece": float(ece) if len(p) else float("nan"), "bins": bins}


def refusal_at_floor(top_p: Sequence[float], answerable: Sequence[bool], floor: float) -> dict:
    """Question-level decisions: a question is refused when its best p_relevant is below the floor."""
    return refusal_decisions(np.asarray(top_p, dtype=np.float64) < floor, answerable, floor)


def refusal_decisions(refused: Sequence[bool], answerable: Sequence[bool], floor: float) -> dict:
    """Refusal precision and recall, false refusals and coverage of the decisions actually taken."""
    r = np.asarray(refused, dtype=bool)
    a = np.asarray(answerable, dtype=bool)
    n_refused = int(r.sum())
    return {
        "floor": floor,
        "refusal_precision": int((r & ~a).sum()) / n_refused if n_refused else float("nan"),
        "refusal_recall": int((r & ~a).sum()) / int((~a).sum()) if (~a).any() else float("nan"),
        "false_refusal_rate": int((r & a).sum()) / int(a.sum()) if a.any() else float("nan"),
        "coverage": float((~r).mean()) if len(r) else float("nan"),
    }


def log_loss(probs: Sequence[float], labels: Sequence[int]) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(p) else float("nan")


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def span_exact_match(prediction: str, golds: Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def span_f1(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD's token F1, the best over the gold answers."""
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        truth = normalize_answer(gold).split()
        common = sum((Counter(predicted) & Counter(truth)).values())
        if not predicted or not truth:
            best = max(best, float(predicted == truth))
        elif common:
            precision, recall = common / len(predicted), common / len(truth)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_answer(text: str, golds: Sequence[str]) -> bool:
    """Whether `text` holds one of the gold answers (normalised, as whole words)."""
    shown = f" {normalize_answer(text)} "
    return any(normalize_answer(g) and f" {normalize_answer(g)} " in shown for g in golds)


def risk_coverage(top_p: Sequence[float], answerable: Sequence[bool]) -> list[dict]:
    """Answer the most confident questions first: at each coverage, the share of answered
    questions that had no answer in the corpus (risk)."""
    p = np.asarray(top_p, dtype=np.float64)
    a = np.asarray(answerable, dtype=bool)
    order = np.argsort(-p, kind="mergesort")
    wrong = np.cumsum(~a[order])
    n = np.arange(1, len(p) + 1)
    return [{"coverage": float(k / len(p)), "risk": float(w / k), "threshold": float(p[order][k - 1])}
            for k, w in zip(n, wrong)]
