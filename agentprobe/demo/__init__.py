"""The offline demo: a bundled agent, a local fake provider, the real proxy."""
