"""A recorded run as OpenTelemetry spans, with its scan findings as span events."""

from __future__ import annotations

from ..checks import scan_runs
from .otlp import call_span, post


def send_run(db, run_id: str, endpoint: str, batch: int = 512) -> int:
    calls = list(db.query("SELECT * FROM calls WHERE run_id = ? ORDER BY seq", [run_id]))
    by_seq = {c["seq"]: c["id"] for c in calls}
    findings_by_call: dict[str, list[dict]] = {}
    for finding in scan_runs(db, [run_id]):
        for ref in finding.calls:
            # Some rules cite a call by run and seq only.
            call_id = ref.get("call_id") or (by_seq.get(ref.get("seq")) if ref.get("run_id") == run_id else None)
            if call_id:
                findings_by_call.setdefault(call_id, []).append(finding.to_dict())
    spans = [call_span(call, findings_by_call.get(call["id"], [])) for call in calls]
    for i in range(0, len(spans), batch):
        post(endpoint, spans[i:i + batch])
    return len(spans)
