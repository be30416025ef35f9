"""`agentprobe analyze`: the failure analyst prompt, filled with measured evidence, sent to a model, and
its answer checked against the fixed XML structure.

render: the versioned template -> prompt text. evidence: scan findings and run statistics -> a
section that fits a token budget. The prompt goes out through `agentprobe.clients.send`.
validate: the answer -> an Analysis, or InvalidAnswer saying what is wrong.
"""

from .render import PROMPT_VERSION, render
from .validate import Analysis, InvalidAnswer, parse_answer

__all__ = ["Analysis", "InvalidAnswer", "PROMPT_VERSION", "parse_answer", "render"]
