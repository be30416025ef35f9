"""Link a run's calls: retries to the failed attempt they repeat, turns to their conversation.

Runs in the writer, in completion order. That order is what keeps this simple: a retry is
only sent after its failed attempt finished, and a follow-up turn only after the turn it extends.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..providers.base import ParsedRequest
from ..util.clock import new_id
from ..util.hashing import canonical_json, sha256_text
from ..util.lru import LRU


@dataclass
class _Failed:
    attempt: int
    original: str
    conversation_id: str | None
    turn: int | None
    started: float
    ended: float


# A retry follows its failed attempt within seconds and a follow-up turn follows the turn it extends,
# so the writer needs only recent calls to link them. Bounded, so a proxy that records for days
# holds the same memory on its millionth call as on its ten-thousandth.
FAILED_REMEMBERED = 10_000
TURNS_REMEMBERED = 10_000

# A client that gives up (a timeout) and resends can dispatch the retry a moment before the proxy
# sees its first connection close; up to this much earlier (and never more than half the failed
# call's own duration) still counts as after.
RETRY_SLACK_S = 0.25


def dispatched_after(started: float, failure: _Failed) -> bool:
    """Whether a call sent at `started` came after `failure` ended, so it can be a retry of it.

    Self-consistency and best-of-n agents send identical requests at once: one of them failing
    does not make the others, already in flight, its retries.
    """
    slack = min(RETRY_SLACK_S, (failure.ended - failure.started) / 2)
    return started >= failure.ended - slack


class RunTracker:
    """Per-run memory of recent calls, to link retries and conversation turns."""

    def __init__(self) -> None:
        # request digest -> its latest attempt, while that attempt is a failure
        self.failed: LRU[str, _Failed] = LRU(FAILED_REMEMBERED)
        # chained hash of a message-list prefix -> (conversation_id, turn)
        self.by_prefix: LRU[str, tuple[str, int]] = LRU(TURNS_REMEMBERED)
        # Conversations the provider keeps (Responses API): a response id, or a conversation
        # object's id, -> (conversation_id, turn of the latest call in it)
        self.by_state: LRU[str, tuple[str, int]] = LRU(TURNS_REMEMBERED)

    @staticmethod
    def chain(system: str | None, messages: list[dict]) -> list[str]:
        h = sha256_text(system or "") or ""
        out = [h]
        for m in messages:
            h = sha256_text(h + canonical_json(m)) or ""
            out.append(h)
        return out

    def link(self, call: dict, parsed: ParsedRequest | None, failed: bool, started: float, ended: float) -> None:
        req = call["request_sha256"]
        prev = self.failed.get(req) if req else None
        if prev is not None and not dispatched_after(started, prev):
            prev = None  # sent while the failure was still in flight: a twin, not a retry
        if prev is not None:
            call["attempt"] = prev.attempt + 1
            call["retry_of"] = prev.original
            call["conversation_id"] = prev.conversation_id
            call["turn"] = prev.turn
        elif parsed is not None and parsed.generates and (parsed.previous_response_id or parsed.conversation_ref):
            self._link_server_state(call, parsed)
        elif parsed is not None and parsed.generates and parsed.messages:
            # Only calls that generate hold a conversation: a token count of it is not one of its turns.
            chain = self.chain(parsed.system_prompt, parsed.messages)
            n = len(parsed.messages)
            conversation, turn = None, 1
            for k in range(n - 1, 0, -1):
                hit = self.by_prefix.get(chain[k])
                if hit:
                    conversation, turn = hit[0], hit[1] + 1
                    break
            call["conversation_id"] = conversation or new_id()
            call["turn"] = turn
            self.by_prefix.setdefault(chain[n], (call["conversation_id"], turn))
        if not failed and call.get("conversation_id") and call.get("response_id"):
            # The next call may continue from this answer by its id (previous_response_id).
            self.by_state[call["response_id"]] = (call["conversation_id"], call["turn"])
        if not req:
            return
        if failed:
            self.failed[req] = _Failed(
                attempt=call["attempt"],
                original=call.get("retry_of") or call["id"],
                conversation_id=call.get("conversation_id"),
                turn=call.get("turn"),
                started=started,
                ended=ended,
            )
        elif prev is not None or ((earlier := self.failed.get(req)) is not None and dispatched_after(started, earlier)):
            # A retry that worked, or the same request sent again later (a new call, not a retry),
            # ends the failure's story; a twin that was in flight with it does not.
            self.failed.pop(req)

    def _link_server_state(self, call: dict, parsed: ParsedRequest) -> None:
        """Calls whose history the provider keeps: chained by the ids the request names, turns counting up."""
        hit = None
        if parsed.previous_response_id:
            hit = self.by_state.get(parsed.previous_response_id)
        if hit is None and parsed.conversation_ref:
            hit = self.by_state.get(parsed.conversation_ref)
        conversation, turn = (hit[0], hit[1] + 1) if hit else (new_id(), 1)
        call["conversation_id"], call["turn"] = conversation, turn
        if parsed.conversation_ref:
            self.by_state[parsed.conversation_ref] = (conversation, turn)
