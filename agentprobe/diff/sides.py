"""One side of a diff: a run's LLM calls as logical steps, each with its retries folded in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import sqlite_utils

from ..store.queries import body_text


@dataclass
class Step:
    """A logical call: the last attempt of a request, with the failed attempts before it."""

    call: dict
    attempts: list[dict] = field(default_factory=list)  # every attempt, in order, the last one included
    conversation: int = 0  # order of first appearance of its conversation in the run

    @property
    def key(self) -> tuple:
        # What makes two calls "the same step" across runs, even when their contents differ.
        return (self.conversation, self.call["turn"] or 0, self.call["api"])


@dataclass
class Side:
    db: sqlite_utils.Database
    run: dict
    steps: list[Step]

    def prompt_text(self, sha: str | None) -> str | None:
        if not sha:
            return None
        row = self.db.execute("SELECT text FROM prompts WHERE sha256 = ?", [sha]).fetchone()
        return row[0] if row else None

    def request_json(self, call: dict):
        text = body_text(self.db, call["request_body"])
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None


def load_side(db: sqlite_utils.Database, run_id: str) -> Side:
    run = next(db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
    calls = list(db.query("SELECT * FROM calls WHERE run_id = ? AND api IS NOT NULL ORDER BY seq", [run_id]))
    by_id = {c["id"]: c for c in calls}
    chains: dict[str, list[dict]] = {}
    for c in calls:
        root = c["retry_of"] if c["retry_of"] in by_id else c["id"]
        chains.setdefault(root, []).append(c)
    conversations: dict[str, int] = {}
    steps = []
    for c in calls:
        if c["id"] not in chains:
            continue  # a retry: it is part of its original's step
        chain = chains[c["id"]]
        conv = c["conversation_id"] or c["id"]
        conversations.setdefault(conv, len(conversations))
        steps.append(Step(call=chain[-1], attempts=chain, conversation=conversations[conv]))
    return Side(db, run, steps)
