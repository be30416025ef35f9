"""Link tool executions to the model's tool calls: model asks -> tool runs -> result returned.

No framework sends anything that ties a model's `call_1` to the MCP request that runs it, so
the link is made from what both sides carry: the run, the tool's name, the arguments (as
canonical JSON) and time (the model's answer ends before the tool starts). The LLM call that
sends the result back names the model's call id in its tool message.

Runs in the writer, in completion order: a model's answer is always built before the tool
calls it asked for (they start after it ended), and a tool call before the LLM call that
returns its result.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..util.hashing import sha256_json
from . import redact
from ..util.lru import LRU

# Tool calls a model asked for, remembered per tool name; executions follow within seconds.
NAMES_REMEMBERED = 1_000
ASKED_PER_NAME = 1_000
EXECUTIONS_REMEMBERED = 10_000
# A client that starts the tool the instant it reads the answer may do so before the proxy saw
# the answer's connection end.
SLACK_S = 0.25


def arguments_digest(arguments: Any) -> str | None:
    """sha256 of the arguments as canonical JSON; a model's arguments arrive as a JSON string."""
    if isinstance(arguments, str):
        if not arguments.strip():
            arguments = {}
        else:
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
    if arguments is None:
        arguments = {}
    # Redacted first, on both sides (the model's arguments and the MCP request's): no digest of a secret.
    return sha256_json(redact.scrub_json(arguments))


def model_tool_call_id(llm_call_id: str, index: int, given: str | None) -> str:
    """The model's id for its tool call; Gemini gives none, so its position in the answer stands in."""
    return given or f"{llm_call_id}#{index}"


@dataclass
class _Asked:
    tool_call_id: str
    arguments: str | None
    llm_call_id: str
    ended: float
    executed_by: str | None = None


class ToolLinks:
    def __init__(self) -> None:
        self.asked: LRU[str, deque[_Asked]] = LRU(NAMES_REMEMBERED)
        self.executions: LRU[str, str] = LRU(EXECUTIONS_REMEMBERED)  # model tool call id -> execution call id

    def model_asked(self, llm_call_id: str, tool_calls: list[dict], ended: float) -> None:
        for k, tc in enumerate(tool_calls, 1):
            name = tc.get("name")
            if not isinstance(name, str) or not name:
                continue
            queue = self.asked.get(name)
            if queue is None:
                queue = self.asked[name] = deque(maxlen=ASKED_PER_NAME)
            queue.append(_Asked(model_tool_call_id(llm_call_id, k, tc.get("id")),
                                arguments_digest(tc.get("arguments")), llm_call_id, ended))

    def executed(self, call: dict, name: str | None, arguments: str | None, started: float) -> None:
        """Fill the execution row's link to the model's call (tool_call_id, asked_by_call_id, tool_link)."""
        queue = self.asked.get(name) if name else None
        if not queue:
            return
        before = [a for a in queue if a.ended <= started + SLACK_S]
        # The same call asked for (oldest first), else a call of the same tool whose arguments the agent
        # changed (filled defaults), else the agent running a call again (a retry, an input_required round).
        pick, how = next((a for a in before if a.executed_by is None and a.arguments == arguments), None), "arguments"
        if pick is None:
            pick, how = next((a for a in before if a.executed_by is None), None), "name"
        if pick is None:
            pick, how = next((a for a in reversed(before) if a.arguments == arguments), None), "repeat"
        if pick is None:
            return
        pick.executed_by = call["id"]
        call.update(tool_call_id=pick.tool_call_id, asked_by_call_id=pick.llm_call_id, tool_link=how)
        self.executions[pick.tool_call_id] = call["id"]

    def returned(self, llm_call_id: str, tool_result_ids: list[str]) -> list[tuple[str, dict]]:
        """Updates to the executions whose results this LLM call sends back to the model."""
        out = []
        for ident in tool_result_ids:
            execution = self.executions.get(ident) if ident else None
            if execution:
                out.append((execution, {"returned_by_call_id": llm_call_id}))
        return out
