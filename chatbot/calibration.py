"""The mapping from a candidate's scores to `p_relevant`, and the floor on `p_relevant`.

Both come from a calibration file fitted on labelled data (see `chatbot calibrate`) and
tied to the models it was fitted for: a calibration is meaningless for another model.

"platt" and "isotonic" read `rerank_logit` alone. "logistic" reads a weighted sum of any of
FEATURES. The question's `cosine_similarity` to the chunk and the chunk's `term_coverage` of the
question's words help because the cross-encoder judges a pair on its own and is easily impressed by
a fluent passage on the wrong subject, while a low cosine and few shared words say the question is
about something the chunk is not, which is what questions from outside the knowledge base look like.
`semantic_logit` (the reranker's logit without its exact-match term) helps the other way: a question
written from a passage that does not answer it repeats the passage's words, so the exact-match
evidence that ranks chunks well says little about whether the answer is there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from chatbot.errors import CalibrationError


METHODS = ("platt", "isotonic", "logistic")
# what "logistic" may read of a candidate
FEATURES = ("rerank_logit", "cosine_similarity", "term_coverage", "semantic_logit")
# What P(answerable) may read of a question: the best of its read candidates' scores. The reader's
# `answer_margin` (best span score minus no-answer score) and `sentence_cosine` (the closest sentence's, by the
# embedder) ask whether a passage holds an answer; the others ask whether a passage is about the question.
QUESTION_FEATURES = ("best_rerank_logit", "best_semantic_logit", "best_cosine_similarity", "best_answer_margin",
                     "best_p_relevant", "best_sentence_cosine")


_MISSING_FEATURE_HINTS = {
    "best_answer_margin": ": the reranker has no reader, so fit a calibration for it with `chatbot calibrate`",
    "best_sentence_cosine": ": the pipeline's located stage sets it (`chatbot.locate`) on the best-ranked chunks",
}


def question_features(rerank_logit, semantic_logit=None, cosine_similarity=None, answer_margin=None,
                      p_relevant=None, sentence_cosine=None) -> dict[str, float | None]:
    """The question's QUESTION_FEATURES from its read candidates' scores (each a sequence aligned with
    `rerank_logit`); a feature is None when some candidate lacks it, and every one is None with no candidates.
    The answer margin and the sentence cosine are the exceptions: the best over the pairs that carry one (the
    reader and the located stage read only the best-ranked pairs), None when none does."""
    def best(values):
        if values is None or not len(values) or any(v is None for v in values):
            return None
        values = np.asarray(values, dtype=np.float64)
        return None if np.isnan(values).any() else float(values.max())

    def best_read(values):
        read = [float(v) for v in (values if values is not None else ()) if v is not None and not np.isnan(v)]
        return max(read) if read else None

    return {"best_rerank_logit": best(rerank_logit), "best_semantic_logit": best(semantic_logit),
            "best_cosine_similarity": best(cosine_similarity),
            "best_answer_margin": best_read(answer_margin), "best_p_relevant": best(p_relevant),
            "best_sentence_cosine": best_read(sentence_cosine)}


@dataclass(frozen=True)
class Calibration:
    floor: float
    # "platt": p = sigmoid(a * logit + b); "isotonic": piecewise linear in logit;
    # "logistic": p = sigmoid(intercept + sum of weight * feature), over the FEATURES named in `weights`
    method: str = "platt"
    platt_a: float = 1.0
    platt_b: float = 0.0
    isotonic_x: tuple[float, ...] = ()
    isotonic_y: tuple[float, ...] = ()
    weights: dict = field(default_factory=dict, hash=False)
    # The order of the read candidates: by `ranking_score`, a weighted sum of FEATURES fitted for
    # ranking (empty: the reranker's own order). Apart from `weights` because the scores that best
    # tell which chunk answers are not the ones that best tell whether any chunk does.
    ranking_weights: dict = field(default_factory=dict, hash=False)
    # P(answerable): a logistic regression on QUESTION_FEATURES ("intercept" too), and the floor on it.
    # When set, it decides refusal: a question is answered when P(answerable) >= answerability_floor,
    # and `floor` then only says which read chunks may serve as its evidence. Empty: the older rule,
    # a question is answered when some chunk's p_relevant clears `floor`.
    answerability_weights: dict = field(default_factory=dict, hash=False)
    answerability_floor: float = 0.0
    # The reader's answer margin from which its span is stated first in an answer, fitted where its spans
    # were right (F1 >= 0.5) for 80% of held-out questions; None: spans are shown in the panel, not stated.
    answer_span_floor: float | None = None
    reranker_fingerprint: str = ""  # empty = not tied to a model (a hand-set default)
    embedder_fingerprint: str = ""  # set when the mapping reads cosine similarity, which the embedder defines
    chunking_fingerprint: str = ""  # chunk size and overlap shape every score's distribution
    notes: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def reads_sentence_cosine(self) -> bool:
        """Whether P(answerable) needs the located stage's closest-sentence cosine."""
        return bool(self.answerability_weights.get("best_sentence_cosine"))

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor <= 1.0:
            raise CalibrationError(f"calibration floor must be a probability in [0, 1], got {self.floor}")
        if self.method not in METHODS:
            raise CalibrationError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "isotonic" and (len(self.isotonic_x) < 2 or len(self.isotonic_x) != len(self.isotonic_y)):
            raise CalibrationError("isotonic calibration needs matching isotonic_x / isotonic_y of length >= 2")
        for key, weights in (("weights", self.weights), ("ranking_weights", self.ranking_weights)):
            unknown = set(weights) - set(FEATURES) - {"intercept"}
            if unknown:
                raise CalibrationError(f"calibration {key} name unknown feature(s) {sorted(unknown)}; "
                                       f"known: {', '.join(FEATURES)}")
        if not 0.0 <= self.answerability_floor <= 1.0:
            raise CalibrationError(f"calibration answerability_floor must be a probability in [0, 1], "
                                   f"got {self.answerability_floor}")
        unknown = set(self.answerability_weights) - set(QUESTION_FEATURES) - {"intercept"}
        if unknown:
            raise CalibrationError(f"calibration answerability_weights name unknown feature(s) {sorted(unknown)}; "
                                   f"known: {', '.join(QUESTION_FEATURES)}")
        if self.method == "logistic" and not set(self.weights) & set(FEATURES):
            raise CalibrationError(f"logistic calibration needs weights for some of {', '.join(FEATURES)}")

    @property
    def reads_cosine(self) -> bool:
        return (self.method == "logistic" and bool(self.weights.get("cosine_similarity"))
                or bool(self.ranking_weights.get("cosine_similarity"))
                or bool(self.answerability_weights.get("best_cosine_similarity")))

    @property
    def judges_answerability(self) -> bool:
        return bool(self.answerability_weights)

    @property
    def decision_floor(self) -> float:
        """The floor that decides refusal: on P(answerable) when this calibration judges it, else on p_relevant."""
        return self.answerability_floor if self.judges_answerability else self.floor

    def with_decision_floor(self, floor: float) -> "Calibration":
        """The same calibration with the floor that decides refusal moved (`decision_floor`)."""
        import dataclasses

        if not 0.0 <= floor <= 1.0:
            raise CalibrationError(f"the floor must be a probability in [0, 1], got {floor}")
        key = "answerability_floor" if self.judges_answerability else "floor"
        return dataclasses.replace(self, **{key: float(floor)})

    def p_answerable(self, features: Mapping[str, float | None]) -> float | None:
        """P(the evidence answers the question), from `question_features`; None without answerability
        weights. A question with no read candidates has probability 0."""
        if not self.answerability_weights:
            return None
        if all(v is None for v in features.values()):
            return 0.0
        linear = float(self.answerability_weights.get("intercept", 0.0))
        for name, weight in self.answerability_weights.items():
            if name == "intercept" or not weight:
                continue
            value = features.get(name)
            if value is None:
                raise CalibrationError(f"this calibration's P(answerable) reads {name}, and none was given"
                                       + _MISSING_FEATURE_HINTS.get(name, ""))
            linear += weight * float(value)
        return float(1.0 / (1.0 + np.exp(-linear)))

    def ranking_score(self, rerank_logit, **features) -> np.ndarray | None:
        """Per pair, the score the gate orders candidates by (higher first); None: keep the reranker's order."""
        if not self.ranking_weights:
            return None
        return _weighted_sum(self.ranking_weights, np.asarray(rerank_logit, dtype=np.float64), features)

    def p_relevant(self, rerank_logit, **features) -> np.ndarray:
        """Per pair. The "logistic" method also reads the other FEATURES it has weights for, given by
        name (`cosine_similarity=`, `term_coverage=`, `semantic_logit=`), each aligned with `rerank_logit`."""
        z = np.asarray(rerank_logit, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(z, self.isotonic_x, self.isotonic_y)
        if self.method == "platt":
            linear = self.platt_a * z + self.platt_b
        else:
            linear = _weighted_sum(self.weights, z, features)
        # float64 on purpose: in fp16 a sigmoid of logits above ~8 rounds to exactly 1.0 and ties.
        return 1.0 / (1.0 + np.exp(-linear))

    def check_fits(self, running: Mapping[str, str], source: str) -> None:
        """`running`: the pipeline's fingerprints by kind ("reranker", "embedder", "chunking")."""
        for kind, fitted in (("reranker", self.reranker_fingerprint), ("embedder", self.embedder_fingerprint),
                             ("chunking", self.chunking_fingerprint)):
            if fitted and fitted != running.get(kind):
                raise CalibrationError(
                    f"calibration {source} was fitted for {kind} '{fitted}', but the running {kind} is "
                    f"'{running.get(kind)}'. Fit one for this setup with `chatbot calibrate`, or point config key "
                    "'calibration' at the matching file."
                )

    def save(self, path: str | Path) -> None:
        d = asdict(self)
        d["isotonic_x"], d["isotonic_y"] = list(self.isotonic_x), list(self.isotonic_y)
        Path(path).write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(f"calibration file {p} does not exist (config key 'calibration')") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CalibrationError(f"calibration file {p} is not valid JSON: {e}") from None
        if not isinstance(d, dict) or "floor" not in d:
            raise CalibrationError(f"calibration file {p} has no 'floor'")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise CalibrationError(f"calibration file {p}: unknown key(s) {sorted(unknown)}")
        try:
            d["isotonic_x"] = tuple(float(x) for x in d.get("isotonic_x", ()))
            d["isotonic_y"] = tuple(float(y) for y in d.get("isotonic_y", ()))
            for k in ("floor", "platt_a", "platt_b", "answerability_floor"):
                if k in d:
                    d[k] = float(d[k])
            if d.get("answer_span_floor") is not None:
                d["answer_span_floor"] = float(d["answer_span_floor"])
            for key in ("weights", "ranking_weights", "answerability_weights"):
                if not isinstance(d.get(key, {}), dict):
                    raise TypeError(f"'{key}' must map feature names to numbers")
                d[key] = {str(k): float(v) for k, v in d.get(key, {}).items()}
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise CalibrationError(f"calibration file {p} is malformed: {e}") from None


def _weighted_sum(weights: Mapping[str, float], rerank_logit: np.ndarray, features: Mapping) -> np.ndarray:
    linear = np.full(rerank_logit.shape, float(weights.get("intercept", 0.0)))
    for name, weight in weights.items():
        if name == "intercept" or not weight:
            continue
        values = rerank_logit if name == "rerank_logit" else features.get(name)
        if values is None or any(v is None for v in values):
            raise CalibrationError(f"this calibration reads {name}, and none was given" + (
                ": the reranker has no separate semantic part, so fit a calibration for it with "
                "`chatbot calibrate`" if name == "semantic_logit" else ""))
        linear = linear + weight * np.asarray(values, dtype=np.float64)
    return linear
