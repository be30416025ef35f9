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


# A retry follows its failed attempt within seconds and a follow-up turn follows the turn it extends,
# so the writer needs only recent calls to link them. Bounded, so a proxy that records for days
# holds the same memory on its millionth call as on its ten-thousandth.
FAILED_REMEMBERED = 10_000
TURNS_REMEMBERED = 10_000


class RunTracker:
    """Per-run memory of recent calls, to link retries and conversation turns."""

    def __init__(self) -> None:
        # request digest -> its latest attempt, while that attempt is a failure
        self.failed: LRU[str, _Failed] = LRU(FAILED_REMEMBERED)
        # chained hash of a message-list prefix -> (conversation_id, turn)
        self.by_prefix: LRU[str, tuple[str, int]] = LRU(TURNS_REMEMBERED)

    @staticmethod
    def chain(system: str | None, messages: list[dict]) -> list[str]:
        h = sha256_text(system or "") or ""
        out = [h]
        for m in messages:
            h = sha256_text(h + canonical_json(m)) or ""
            out.append(h)
        return out

    def link(self, call: dict, parsed: ParsedRequest | None, failed: bool) -> None:
        req = call["request_sha256"]
        prev = self.failed.get(req) if req else None
        if prev is not None:
            call["attempt"] = prev.attempt + 1
            call["retry_of"] = prev.original
            call["conversation_id"] = prev.conversation_id
            call["turn"] = prev.turn
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
        if not req:
            return
        if failed:
            self.failed[req] = _Failed(
                attempt=call["attempt"],
                original=call.get("retry_of") or call["id"],
                conversation_id=call.get("conversation_id"),
                turn=call.get("turn"),
            )
        else:  # the same request sent again later is a new call, not a retry
            self.failed.pop(req)
