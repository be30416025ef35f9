"""Retry and conversation linking remember recent calls only, so the writer's memory stays flat."""

from __future__ import annotations

from agentprobe.capture import linking
from agentprobe.capture.linking import RunTracker
from agentprobe.providers.base import ParsedRequest
from agentprobe.util.lru import LRU


def test_lru_forgets_the_least_recently_used():
    lru: LRU[str, int] = LRU(2)
    lru["a"], lru["b"] = 1, 2
    assert lru.get("a") == 1  # "b" is now the oldest
    lru["c"] = 3
    assert "b" not in lru and lru.get("a") == 1 and lru.get("c") == 3 and len(lru) == 2
    assert lru.setdefault("c", 9) == 3 and lru.setdefault("d", 4) == 4 and "a" not in lru
    assert lru.pop("d") == 4 and lru.pop("d") is None and len(lru) == 1


def _call(tracker: RunTracker, n: int, messages: list[dict], *, failed: bool = False, digest: str | None = None):
    call = {"id": f"call-{n}", "request_sha256": digest or f"digest-{n}", "attempt": 1}
    tracker.link(call, ParsedRequest(provider="openai_compatible", api="chat.completions",
                                     system_prompt="sys", messages=messages), failed)
    return call


def _turn(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}]


def test_retries_and_turns_still_link():
    t = RunTracker()
    first = _call(t, 1, _turn(0), failed=True, digest="same")
    second = _call(t, 2, _turn(0), failed=True, digest="same")
    third = _call(t, 3, _turn(0), digest="same")
    assert (second["attempt"], second["retry_of"]) == (2, "call-1")
    assert (third["attempt"], third["retry_of"], third["conversation_id"]) == (3, "call-1", first["conversation_id"])
    # Once it succeeded, the same request sent again is a new call, not a fourth attempt.
    again = _call(t, 4, _turn(0), digest="same")
    assert again["attempt"] == 1 and "retry_of" not in again
    follow_up = _call(t, 5, [*_turn(0), {"role": "assistant", "content": "answer"}, {"role": "user", "content": "more"}])
    assert (follow_up["conversation_id"], follow_up["turn"]) == (first["conversation_id"], 2)


def test_memory_is_bounded_however_many_calls_go_by(monkeypatch):
    monkeypatch.setattr(linking, "TURNS_REMEMBERED", 100)
    monkeypatch.setattr(linking, "FAILED_REMEMBERED", 50)
    t = RunTracker()
    kept = _call(t, 0, _turn(-1))
    for i in range(1, 1000):
        _call(t, i, _turn(i), failed=i % 2 == 0)
        if i % 60 == 0:  # an active conversation: each of its turns refreshes what it extends
            kept = _call(t, 10_000 + i, [*_turn(-1), {"role": "assistant", "content": str(i)},
                                         {"role": "user", "content": "go on"}])
    assert len(t.by_prefix) == 100 and len(t.failed) == 50
    # Successes leave nothing behind in the failure memory.
    assert all(int(k.split("-")[1]) % 2 == 0 for k in t.failed._entries)
    resumed = _call(t, 20_000, [*_turn(-1), {"role": "assistant", "content": "960"}, {"role": "user", "content": "go on"},
                                {"role": "assistant", "content": "x"}, {"role": "user", "content": "and"}])
    assert resumed["conversation_id"] == kept["conversation_id"] and resumed["turn"] == kept["turn"] + 1
    # A conversation idle while more than TURNS_REMEMBERED other calls went by starts afresh.
    idle = _call(t, 20_001, [*_turn(3), {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}])
    assert idle["turn"] == 1
