import gzip
import zlib

import brotli
import pytest
import zstandard

from agentprobe.capture import tokens
from agentprobe.capture.decoders import decoder_for


def test_counts_offline_and_names_the_encoding():
    n, label = tokens.count("The quick brown fox jumps over the lazy dog.", "gpt-4")
    assert n == 10 and label == "cl100k_base"


def test_special_token_text_in_a_prompt_counts_as_plain_text():
    text = "Stop at <|endoftext|> or <|fim_prefix|>, the docs say."
    enc, _ = tokens.encoding_for("gpt-4")
    expected = len(enc.encode(text, disallowed_special=()))
    assert expected > len(enc.encode(text, allowed_special="all"))  # as text, not one special token each
    assert tokens.count(text, "gpt-4")[0] == expected
    assert tokens.count_parts([text, "and more"], "gpt-4")[0] == expected + 1 + len(enc.encode("and more"))


def test_other_families_are_labelled_estimates():
    _, label = tokens.count("hello", "claude-sonnet-4-6")
    assert label.startswith("cl100k_base~")
    _, label = tokens.count("hello", "gpt-4o")
    assert label in ("o200k_base", "cl100k_base~o200k_base")


@pytest.mark.parametrize(
    "encoding,compress",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send
        ("br", brotli.compress),
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("identity", lambda b: b),
    ],
)
def test_incremental_decoders_any_chunking(encoding, compress):
    payload = b"data: {\"x\": 1}\n\n" * 200
    blob = compress(payload)
    for size in (1, 7, 4096):
        d = decoder_for(encoding)
        out = b"".join(d.decompress(blob[i : i + size]) for i in range(0, len(blob), size)) + d.flush()
        assert out == payload


def test_unknown_encoding():
    assert decoder_for("compress") is None
