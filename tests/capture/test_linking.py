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


def _call(tracker: RunTracker, n: int, messages: list[dict], *, failed: bool = False, digest: str | None = None,
          started: float | None = None, ended: float | None = None, **request):
    """Call n, by default sent at n seconds and done 0.5 s later (one after another)."""
    call = {"id": f"call-{n}", "request_sha256": digest or f"digest-{n}", "attempt": 1,
            "response_id": request.pop("response_id", None)}
    started = float(n) if started is None else started
    tracker.link(call, ParsedRequest(provider="openai_compatible", api="chat.completions",
                                     system_prompt="sys", messages=messages, **request), failed,
                 started, started + 0.5 if ended is None else ended)
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


def test_identical_requests_in_flight_together_are_twins_not_retries():
    """Best-of-n: three identical requests sent at once; the first to fail makes no retry of the others."""
    t = RunTracker()
    a = _call(t, 1, _turn(0), failed=True, digest="same", started=10.00, ended=10.20)
    b = _call(t, 2, _turn(0), digest="same", started=10.01, ended=10.90)
    c = _call(t, 3, _turn(0), failed=True, digest="same", started=10.02, ended=11.00)
    assert (a["attempt"], b["attempt"], c["attempt"]) == (1, 1, 1)
    assert b.get("retry_of") is None and c.get("retry_of") is None
    # Sent after the failures ended: a real retry, of the latest failure's original.
    d = _call(t, 4, _turn(0), digest="same", started=11.30, ended=11.60)
    assert d["attempt"] == 2 and d["retry_of"] == "call-3"


def test_a_retry_sent_a_moment_before_the_proxy_saw_the_hang_up_still_links():
    """A client timeout: the SDK resends at once; the proxy notices the first connection close just after."""
    t = RunTracker()
    _call(t, 1, _turn(0), failed=True, digest="same", started=0.0, ended=30.003)
    retry = _call(t, 2, _turn(0), digest="same", started=30.001, ended=30.5)
    assert retry["attempt"] == 2 and retry["retry_of"] == "call-1"


def test_a_twin_that_succeeded_leaves_the_failure_waiting_for_its_retry():
    t = RunTracker()
    _call(t, 1, _turn(0), failed=True, digest="same", started=0.0, ended=0.3)
    _call(t, 2, _turn(0), digest="same", started=0.01, ended=0.8)  # in flight with it
    retry = _call(t, 3, _turn(0), digest="same", started=1.0, ended=1.2)
    assert retry["attempt"] == 2 and retry["retry_of"] == "call-1"


def test_previous_response_id_chains_calls_that_carry_no_history():
    t = RunTracker()
    first = _call(t, 1, _turn(0), response_id="resp_1")
    second = _call(t, 2, _turn(1), response_id="resp_2", previous_response_id="resp_1")
    third = _call(t, 3, _turn(2), response_id="resp_3", previous_response_id="resp_2")
    assert first["conversation_id"] == second["conversation_id"] == third["conversation_id"]
    assert [first["turn"], second["turn"], third["turn"]] == [1, 2, 3]
    # A branch from the first answer is the same conversation, at the turn after it.
    branch = _call(t, 4, _turn(9), response_id="resp_4", previous_response_id="resp_1")
    assert branch["conversation_id"] == first["conversation_id"] and branch["turn"] == 2


def test_a_conversation_object_groups_its_calls():
    t = RunTracker()
    calls = [_call(t, n, _turn(n), response_id=f"resp_{n}", conversation_ref="conv_abc") for n in range(1, 4)]
    assert len({c["conversation_id"] for c in calls}) == 1 and [c["turn"] for c in calls] == [1, 2, 3]
    other = _call(t, 9, _turn(0), conversation_ref="conv_other")
    assert other["conversation_id"] != calls[0]["conversation_id"] and other["turn"] == 1
