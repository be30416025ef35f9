"""Talking to providers ourselves: where each one's key, key header and base URL come from, and one
`send()` through the providers' own SDKs, for the commands that call models (the one-shot trace,
analyze, replay's credentials)."""
