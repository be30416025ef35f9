from agentprobe.capture import redact


def test_headers_kept_by_allow_list():
    kept = redact.safe_headers([
        ("Authorization", "Bearer sk-abcdefghijklmnopqrstuvwxyz"),
        ("x-api-key", "sk-ant-api03-secretsecretsecret"),
        ("api-key", "azure-secret-value-123456"),
        ("X-Goog-Api-Key", "AIzaSyDUMMYDUMMYDUMMYDUMMYDUMMYDUMMY00"),
        ("Cookie", "session=abc"),
        ("X-Custom-Gateway-Token", "gw-secret-123456789"),
        ("Content-Type", "application/json"),
        ("x-ratelimit-remaining-requests", "99"),
        ("X-Stainless-Retry-Count", "1"),
    ])
    assert kept == {
        "content-type": "application/json",
        "x-ratelimit-remaining-requests": "99",
        "x-stainless-retry-count": "1",
    }


def test_query_keys_redacted():
    path = "/v1beta/models/gemini-2.5-flash:generateContent?key=AIzaSySECRETSECRETSECRET&alt=sse"
    assert "SECRET" not in redact.safe_path(path)
    assert "alt=sse" in redact.safe_path(path)
    assert redact.safe_path("/v1/chat/completions") == "/v1/chat/completions"


def test_secrets_from_headers_scrubbed_from_body():
    headers = [("Authorization", "Bearer my-gateway-token-0123456789")]
    secrets = redact.secrets_in(headers, "/x?key=query-secret-999999")
    body = {"messages": [{"role": "user", "content": "my key is my-gateway-token-0123456789 and query-secret-999999"}]}
    out = redact.scrub_json(body, secrets)
    text = str(out)
    assert "my-gateway-token-0123456789" not in text and "query-secret-999999" not in text


def test_secret_fields_and_key_shapes():
    body = {
        "api_key": "plain-secret-value",
        "nested": {"apiKey": "another-secret", "client_secret": "x-secret-y"},
        "note": "pasted sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX in the prompt",
        "max_tokens": 100,
        "input_schema": {"properties": {"key": {"type": "string"}}},
    }
    out = redact.scrub_json(body)
    assert out["api_key"] == redact.REDACTED
    assert out["nested"] == {"apiKey": redact.REDACTED, "client_secret": redact.REDACTED}
    assert "sk-proj-ABCDEFGH" not in out["note"]
    assert out["max_tokens"] == 100
    assert out["input_schema"] == {"properties": {"key": {"type": "string"}}}
