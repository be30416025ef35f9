"""From what the proxy saw to rows: the recording session, the captured exchange, row building,
retry and conversation linking, redaction, token counting and content decoding."""
