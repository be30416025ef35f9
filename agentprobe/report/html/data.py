"""What the page shows, read from the database: each run's calls placed on a timeline, its
conversations, its findings (as `scan` finds them) and its prompt texts."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlite_utils

from ...checks import Finding, ScanContext, Thresholds, peers, run_checks
from ...checks.race_condition import inverted_pairs
from ...store.queries import decode_json_columns, summarize, tool_chain
from .text import epoch

# Caps that keep a report of a huge run openable; each one is announced on the page when hit.
MAX_TIMELINE_CALLS = 4000


MAX_TABLE_CALLS = 1000


MAX_CONVERSATIONS_PER_CHART = 12


MAX_INVERSION_PAIRS_LISTED = 20


TIME_BUCKETS = 40


_CALL_COLUMNS = ("id, seq, completion_seq, started_at, first_byte_at, ended_at, latency_ms, ttft_ms, provider, api,"
                 " model, status, error_type, error_message, attempt, retry_of, conversation_id, turn, input_tokens,"
                 " output_tokens, counted_input_tokens, finish_reason, stream, stream_complete, tool_calls,"
                 " tool_result_ids, mcp_method, mcp_name, mcp_server, mcp_transport, tool_call_id, asked_by_call_id,"
                 " returned_by_call_id")


@dataclass
class Bar:
    call: dict
    start: float  # seconds from the first call's start
    end: float
    lane: int = 0
    error: bool = False
    open: bool = False  # no end recorded: drawn to its last known instant
    inverted: bool = False


@dataclass
class RunView:
    run_id: str
    summary: dict
    calls: list[dict]
    bars: list[Bar] = field(default_factory=list)
    lanes: int = 0
    t0: float | None = None  # epoch seconds of the first call's start
    span: float = 0.0
    inversions: list[tuple[dict, dict]] = field(default_factory=list)
    truncated_timeline: int = 0
    details: dict[int, dict] = field(default_factory=dict)  # seq -> report.call_view for the calls table


def is_error(call: dict) -> bool:
    return bool(call["error_type"]) or (call["status"] is not None and call["status"] >= 400) \
        or call["stream_complete"] == 0 or (call["status"] is None and call["ended_at"] is not None)


def _inversions(calls: list[dict]) -> list[tuple[dict, dict]]:
    # The sweep race_condition/completion_inversion counts, so the picture marks exactly its pairs.
    llm = [(i, c["completion_seq"], c["started_at"], c["ended_at"]) for i, c in enumerate(calls) if c["api"] is not None]
    return [(calls[a], calls[b]) for a, b in inverted_pairs(llm)]


def load_details(db: sqlite_utils.Database, view: RunView, findings: list) -> None:
    """What each listed call asked and got, for the calls table's expandable rows."""
    from ..call_view import call_view

    for call in view.calls[:MAX_TABLE_CALLS]:
        try:
            view.details[call["seq"]] = call_view(db, view.run_id, call["seq"], findings=findings)
        except LookupError:
            continue


def load_run(db: sqlite_utils.Database, run_id: str) -> RunView:
    calls = [decode_json_columns(c) for c in
             db.query(f"SELECT {_CALL_COLUMNS} FROM calls WHERE run_id = ? ORDER BY seq", [run_id])]
    seq_of = {c["id"]: c["seq"] for c in calls}
    for c in calls:
        c["tools"] = tool_chain(c, seq_of)  # model asks -> tool runs -> result returned
    view = RunView(run_id, summarize(db, run_id), calls)
    view.inversions = _inversions(calls)
    inverted = {c["seq"] for pair in view.inversions for c in pair}
    starts = [t for t in (epoch(c["started_at"]) for c in calls) if t is not None]
    if not starts:
        return view
    view.t0 = min(starts)
    drawn = calls[:MAX_TIMELINE_CALLS]
    view.truncated_timeline = len(calls) - len(drawn)
    lane_ends: list[float] = []
    for call in drawn:
        start = epoch(call["started_at"])
        if start is None:
            continue
        end = epoch(call["ended_at"])
        is_open = end is None
        if end is None:
            end = start + (call["latency_ms"] or 0) / 1000
        bar = Bar(call, start - view.t0, max(end, start) - view.t0, error=is_error(call), open=is_open,
                  inverted=call["seq"] in inverted)
        # Lowest free lane, so calls that overlap never share a row and sequential ones stay on row 0.
        for lane, lane_end in enumerate(lane_ends):
            if lane_end <= bar.start:
                break
        else:
            lane = len(lane_ends)
            lane_ends.append(0.0)
        bar.lane = lane
        lane_ends[lane] = bar.end
        view.bars.append(bar)
    view.lanes = len(lane_ends)
    view.span = max((b.end for b in view.bars), default=0.0)
    return view


def run_findings(db: sqlite_utils.Database, run_ids: list[str], thresholds: Thresholds,
              windows: dict[str, int], config: dict | None) -> list[Finding]:
    # The same peers and context as `scan`, so the page never disagrees with the CI gate.
    cross, previous = peers(db, run_ids)
    ctx = ScanContext(db, run_ids, cross_run_ids=cross, previous_run=previous, thresholds=thresholds,
                      config=config, context_windows=windows)
    return run_checks(ctx)


@dataclass
class Conversation:
    id: str
    model: str | None
    points: list[tuple[int, int]]  # (turn, input tokens)

    @property
    def peak(self) -> int:
        return max(t for _, t in self.points)


def conversations_of(view: RunView) -> list[Conversation]:
    by_id: dict[str, dict[int, int]] = {}
    model_at_peak: dict[str, tuple[int, str | None]] = {}
    for c in view.calls:
        tokens = c["input_tokens"] if c["input_tokens"] is not None else c["counted_input_tokens"]
        if not c["conversation_id"] or tokens is None:
            continue
        turn = c["turn"] or 1
        turns = by_id.setdefault(c["conversation_id"], {})
        turns[turn] = max(turns.get(turn, 0), tokens)
        if tokens >= model_at_peak.get(c["conversation_id"], (-1, None))[0]:
            model_at_peak[c["conversation_id"]] = (tokens, c["model"])
    return [Conversation(cid, model_at_peak[cid][1], sorted(turns.items())) for cid, turns in by_id.items()]


def prompt_sets(db: sqlite_utils.Database, run_id: str, column: str) -> dict[str | None, list[str]]:
    """model -> hashes in order of first use, like prompt_drift compares them."""
    out: dict[str | None, list[str]] = {}
    for model, h in db.execute(
            f"SELECT model, {column} FROM calls WHERE run_id = ? AND {column} IS NOT NULL ORDER BY seq", [run_id]):
        hashes = out.setdefault(model, [])
        if h not in hashes:
            hashes.append(h)
    return out


def prompt_text(db: sqlite_utils.Database, sha: str) -> str:
    row = db.execute("SELECT text FROM prompts WHERE sha256 = ?", [sha]).fetchone()
    return (row[0] or "") if row else ""
