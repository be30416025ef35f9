"""Re-run a recording: `replay` re-sends its requests live and scores the answers; `serve` acts as
the provider and answers from it."""
