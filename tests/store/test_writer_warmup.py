"""The writer process loads the token encoding at start, not on the first call's row."""

from __future__ import annotations

from agentprobe.capture import tokens
from agentprobe.store import writer_process


def test_warming_up_loads_the_encoding_the_first_row_would_have_loaded():
    tokens.encoding_for.cache_clear()
    tokens._load.cache_clear()
    writer_process._warm_tokenizer()
    assert tokens._load.cache_info().currsize == 1
    enc, label = tokens.encoding_for("claude-sonnet-4-6")  # no tiktoken encoding of its own
    assert enc is not None and label == "cl100k_base~unknown"
    assert tokens._load.cache_info().misses == 1  # the row reused what the warm-up loaded


def test_a_failing_warm_up_is_left_to_the_first_call(monkeypatch):
    def broken(model):
        raise OSError("no encoding on disk")

    monkeypatch.setattr(tokens, "encoding_for", broken)
    writer_process._warm_tokenizer()  # must not raise in the writer's background thread
