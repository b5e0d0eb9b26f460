"""Durable score traces: one row per question asked, in a LanceDB table beside the chunks.

A trace holds the question, time, config and model fingerprints, every candidate with
every score and its fate (kept, below floor, cut by top-n, cited), the decision, per-stage
latency, and later any user feedback, so traces can feed calibration. Never an API key:
the config is stored through `Config.public_dict`.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

import pyarrow as pa

from chatbot.errors import StoreError
from chatbot.store import ChunkStore, sql_str

TRACE_SCHEMA = pa.schema([
    pa.field("trace_id", pa.string(), nullable=False),
    pa.field("asked_at", pa.float64()),  # unix seconds
    pa.field("question", pa.string()),
    pa.field("decision", pa.string()),  # "answer" | "refusal"
    pa.field("floor", pa.float64()),
    pa.field("top_p_relevant", pa.float64()),
    pa.field("record_json", pa.string()),  # the full ask record: candidates, scores, citations, timings
    pa.field("config_json", pa.string()),
    pa.field("fingerprints_json", pa.string()),
    pa.field("feedback_json", pa.string()),  # {"answer": +1|-1, "chunks": {chunk_id: +1|-1}}
])

# Replicas serving one store append at the same moment; on object storage an append can lose the race for
# the next table version, or time out under load. Trying again costs milliseconds; losing a trace costs the
# question's record for good.
WRITE_ATTEMPTS = 4


class TraceStore:
    def __init__(self, store: ChunkStore, table: str | None = None):
        self.store = store
        self.table_name = table or f"{store.table_name}_traces"
        self._table = None

    @property
    def table(self):
        if self._table is None:
            self._table = self.store.db.create_table(self.table_name, schema=TRACE_SCHEMA, exist_ok=True)
        return self._table

    def record(self, record: dict[str, Any], config: dict[str, Any], fingerprints: dict[str, str]) -> str:
        trace_id = uuid.uuid4().hex
        candidates = record.get("candidates", [])
        row = {
            "trace_id": trace_id, "asked_at": time.time(), "question": record["question"],
            "decision": record["decision"], "floor": float(record["floor"]),
            "top_p_relevant": float(candidates[0]["p_relevant"]) if candidates else None,
            "record_json": json.dumps(record, ensure_ascii=False), "config_json": json.dumps(config),
            "fingerprints_json": json.dumps(fingerprints), "feedback_json": "{}",
        }
        rows = pa.Table.from_pylist([row], schema=TRACE_SCHEMA)
        for attempt in range(WRITE_ATTEMPTS):
            try:
                self.table.add(rows)
                return trace_id
            except Exception as e:  # LanceDB raises OSError or RuntimeError by backend; all retryable here
                failure = e
                time.sleep(0.05 * 2 ** attempt * (1 + random.random()))  # jitter: replicas do not retry in step
        raise StoreError(f"the trace table '{self.table_name}' refused {WRITE_ATTEMPTS} appends: {failure}") from failure

    def get(self, trace_id: str) -> dict[str, Any]:
        rows = self.table.search().where(f"trace_id = {sql_str(trace_id)}").limit(1).to_arrow().to_pylist()
        if not rows:
            raise StoreError(f"no trace with id {trace_id}")
        return _decoded(rows[0])

    def add_feedback(self, trace_id: str, rating: int, chunk_id: str | None = None) -> None:
        """Thumbs up (+1) or down (-1) on the answer, or on one of its chunks."""
        if rating not in (-1, 1):
            raise ValueError("rating must be +1 or -1")
        feedback = self.get(trace_id)["feedback"]
        if chunk_id is None:
            feedback["answer"] = rating
        else:
            feedback.setdefault("chunks", {})[chunk_id] = rating
        self.table.update(where=f"trace_id = {sql_str(trace_id)}", values={"feedback_json": json.dumps(feedback)})

    def with_feedback(self) -> list[dict[str, Any]]:
        """Every trace a user rated (answer or chunks), decoded as `get` returns it."""
        rows = self.table.search().where("feedback_json != '{}'").limit(None).to_arrow().to_pylist()
        return [_decoded(row) for row in rows]

    def replayable(self, since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Traces asked at or after `since` (unix seconds), newest first, at most `limit`, decoded as `get`
        returns them: what `chatbot replay` re-runs."""
        if not self.store.has_table(self.table_name):
            return []
        query = self.table.search()
        if since is not None:
            query = query.where(f"asked_at >= {float(since)!r}")
        rows = sorted(query.limit(None).to_arrow().to_pylist(), key=lambda r: -(r["asked_at"] or 0.0))
        return [_decoded(row) for row in rows[:limit]]

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.table.search().select(["trace_id", "asked_at", "question", "decision", "top_p_relevant", "floor"]) \
            .limit(None).to_arrow().to_pylist()
        return sorted(rows, key=lambda r: -r["asked_at"])[:limit]


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("record_json", "config_json", "fingerprints_json", "feedback_json"):
        row[key[:-5]] = json.loads(row.pop(key))
    return row
