"""The mapping from `rerank_logit` to `p_relevant`, and the floor on `p_relevant`.

Both come from a calibration file fitted on labelled data (see `chatbot calibrate`) and
tied to the reranker it was fitted for: a calibration is meaningless for another model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from chatbot.errors import CalibrationError


@dataclass(frozen=True)
class Calibration:
    floor: float
    method: str = "platt"  # "platt": p = sigmoid(a * logit + b); "isotonic": piecewise linear
    platt_a: float = 1.0
    platt_b: float = 0.0
    isotonic_x: tuple[float, ...] = ()
    isotonic_y: tuple[float, ...] = ()
    reranker_fingerprint: str = ""  # empty = not tied to a model (a hand-set default)
    notes: dict = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor <= 1.0:
            raise CalibrationError(f"calibration floor must be a probability in [0, 1], got {self.floor}")
        if self.method not in ("platt", "isotonic"):
            raise CalibrationError(f"calibration method must be 'platt' or 'isotonic', got {self.method!r}")
        if self.method == "isotonic" and (len(self.isotonic_x) < 2 or len(self.isotonic_x) != len(self.isotonic_y)):
            raise CalibrationError("isotonic calibration needs matching isotonic_x / isotonic_y of length >= 2")

    def p_relevant(self, logits) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(z, self.isotonic_x, self.isotonic_y)
        # float64 on purpose: in fp16 a sigmoid of logits above ~8 rounds to exactly 1.0 and ties.
        return 1.0 / (1.0 + np.exp(-(self.platt_a * z + self.platt_b)))

    def check_fits(self, reranker_fingerprint: str, source: str) -> None:
        if self.reranker_fingerprint and self.reranker_fingerprint != reranker_fingerprint:
            raise CalibrationError(
                f"calibration {source} was fitted for reranker '{self.reranker_fingerprint}', but the running "
                f"reranker is '{reranker_fingerprint}'. Fit one for this model with `chatbot calibrate`, "
                "or point config key 'calibration' at the matching file."
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
            for k in ("floor", "platt_a", "platt_b"):
                if k in d:
                    d[k] = float(d[k])
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise CalibrationError(f"calibration file {p} is malformed: {e}") from None
