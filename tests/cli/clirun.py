"""The CLI in this process (click's CliRunner, through agentprobe's real entry point), and runs recorded
through the real proxy to point it at."""

from __future__ import annotations

import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from agentprobe.capture.session import Recording
from agentprobe.proxy.ca import bundle_path
from agentprobe.proxy.runner import ProxyConfig


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def ap(*args: str, db: Path | str | None = None, columns: int | None = None, env: dict | None = None) -> Result:
    """`agentprobe ARGS` as a user runs it, its stdout a pipe (CliRunner's), COLUMNS as given (else unset)."""
    from agentprobe.cli import main

    environ = {"COLUMNS": str(columns) if columns else None, "LINES": None, "AGENTPROBE_DB": str(db) if db else None,
               **(env or {})}
    with CliRunner().isolation(env=environ) as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    return Result(code, out.getvalue().decode(), err.getvalue().decode())


def openai_client(recording: Recording, confdir: Path, provider, **kwargs):
    import openai

    context = ssl.create_default_context(cafile=str(bundle_path(confdir)))
    http = openai.DefaultHttpxClient(proxy=recording.url, verify=context, trust_env=False)
    # Built at runtime: no key-shaped string sits in a file on disk.
    kwargs.setdefault("api_key", "sk-" + "test" * 6)
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=f"{provider.url}/v1", http_client=http, **kwargs)


def record_run(db: Path, confdir: Path, upstream_ca: Path | None, provider, agent, *, label: str | None = "dev",
               command: str | None = None, parent_run_id: str | None = None) -> str:
    """One run through the real proxy: `agent(client)` makes its calls with the openai SDK; the run's id."""
    recording = Recording(db, ProxyConfig(confdir=confdir, upstream_ca=upstream_ca), label=label, command=command,
                          parent_run_id=parent_run_id).start()
    try:
        agent(openai_client(recording, confdir, provider))
    finally:
        recording.stop()
    return recording.run_id


def chat(client, content: str, *, system: str | None = "You are terse.", temperature: float | None = 0,
         model: str = "gpt-4o-mini", fake: str | None = None, **kwargs):
    messages = ([{"role": "system", "content": system}] if system is not None else []) + \
        [{"role": "user", "content": content}]
    extra = {"extra_headers": {"x-fake": fake}} if fake else {}
    if temperature is not None:
        kwargs["temperature"] = temperature
    return client.chat.completions.create(model=model, messages=messages, **extra, **kwargs)
