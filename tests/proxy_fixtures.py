"""Fixtures that put the real proxy between the real SDKs and the fake provider."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlite_utils

from agentprobe.capture.session import Recording
from agentprobe.proxy.ca import bundle_path
from agentprobe.proxy.fastpath import PATCHES
from agentprobe.proxy.runner import ProxyConfig

ALL_PATCHES = frozenset(PATCHES)

PLANTED_OPENAI_KEY = "sk-proj-PLANTEDopenaiKEY0123456789abcdef"
PLANTED_ANTHROPIC_KEY = "sk-ant-api03-PLANTEDanthropicKEY0123456789"
PLANTED_GEMINI_KEY = "AIzaPLANTEDgenaiKEY0123456789abcdefghij"


def staggered_calls(client, delays, label: str, **create) -> None:
    """Chat calls on threads started 50 ms apart, call i held delays[i] s by the fake provider.

    Decreasing delays make calls overlap and finish in reverse dispatch order.
    """
    threads = []
    for i, delay in enumerate(delays):
        t = threading.Thread(target=client.chat.completions.create, kwargs=dict(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{label}{i}"}],
            extra_headers={"x-fake": f"delay={delay}"}, **create))
        t.start()
        threads.append(t)
        time.sleep(0.05)
    for t in threads:
        t.join()


def wait_until(predicate, timeout: float = 20) -> bool:
    """Poll until predicate() is true; False after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


class Recorded:
    """A started Recording plus what a test needs to talk through it and read it back."""

    def __init__(self, tmp_path: Path, upstream_ca: Path, upstream: str | None = None, *,
                 fastpath: frozenset[str] | None = None, db: str | None = None, label: str = "test",
                 **recording_options) -> None:
        """fastpath=None follows $AGENTPROBE_FASTPATH, as `record` does; tests of a patch pass ALL_PATCHES.
        db: another store than a SQLite file in tmp_path (a postgresql:// URL)."""
        from agentprobe.store.db import resolve_path

        self.db_path = resolve_path(db) if db else tmp_path / "agentprobe.db"
        self.confdir = tmp_path / "conf"
        self.recording = Recording(
            self.db_path,
            ProxyConfig(confdir=self.confdir, upstream_ca=upstream_ca, upstream=upstream, fastpath=fastpath),
            label=label,
            **recording_options,
        ).start()
        self.url = self.recording.url
        self.bundle = bundle_path(self.confdir)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.bundle))

    def http_client(self, module):
        """The SDK's own httpx client class, routed through the proxy, trusting its CA."""
        return module.DefaultHttpxClient(proxy=self.url, verify=self.ssl_context(), trust_env=False)

    def openai(self, provider, **kwargs):
        import openai

        kwargs.setdefault("api_key", PLANTED_OPENAI_KEY)
        return openai.OpenAI(base_url=f"{provider.url}/v1", http_client=self.http_client(openai), **kwargs)

    def anthropic(self, provider, **kwargs):
        import anthropic

        kwargs.setdefault("api_key", PLANTED_ANTHROPIC_KEY)
        return anthropic.Anthropic(base_url=provider.url, http_client=self.http_client(anthropic), **kwargs)

    def genai(self, provider, **http_options):
        """google-genai's own client, with its base URL on the fake provider and its httpx client through the proxy."""
        from google import genai
        from google.genai import types

        client_args = {"proxy": self.url, "verify": self.ssl_context(), "trust_env": False}
        options = types.HttpOptions(base_url=provider.url, client_args=client_args, **http_options)
        return genai.Client(api_key=PLANTED_GEMINI_KEY, http_options=options)

    def stop(self) -> None:
        self.recording.stop()

    def calls(self) -> list[dict]:
        return list(self.db().query("SELECT * FROM calls ORDER BY seq"))

    def db(self) -> sqlite_utils.Database:
        self.stop()
        if not isinstance(self.db_path, Path):  # PostgreSQL: the same query/execute surface
            from agentprobe.store.db import open_db

            return open_db(self.db_path)
        return sqlite_utils.Database(self.db_path)


@pytest.fixture
def recorded(tmp_path, tls_ca_bundle):
    rec = Recorded(tmp_path, Path(tls_ca_bundle))
    yield rec
    rec.stop()


# Commands that start a proxy (or a child process that writes to our file descriptors) run as a
# real subprocess; every other command runs in this process through its real entry point, which is
# several times faster than starting an interpreter that imports mitmproxy.
SUBPROCESS_COMMANDS = {"trace", "record", "serve", "replay", "demo"}


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    command = next((a for a in args if not a.startswith("-")), None)
    if command in SUBPROCESS_COMMANDS:
        return subprocess.run([sys.executable, "-m", "agentprobe", *args], capture_output=True, text=True,
                              timeout=timeout, env={**base, **(env or {})}, cwd=cwd)
    return run_in_process(list(args), {**base, **(env or {})}, cwd)


def run_in_process(argv: list[str], env: dict[str, str], cwd=None) -> subprocess.CompletedProcess:
    """`agentprobe ARGV` through agentprobe.cli.main, with this environment and working directory."""
    import contextlib
    import io
    import traceback

    from agentprobe.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # what the interpreter would print before exiting 1
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["agentprobe", *argv], code, out.getvalue(), err.getvalue())


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (a real filesystem that can fill up), mounted for the test and unmounted after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"a disk-full test mounts a small tmpfs and could not: {done.stderr.strip()}"
                    " (it needs root, as .ci/run has)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(directory: Path) -> None:
    """Fill the filesystem under `directory` until a write fails with ENOSPC."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def provider_saw(provider) -> list[tuple[str, str]]:
    """(path, canonical JSON body) of every POST the fake provider received."""
    import json as _json
    from urllib.parse import urlsplit

    out = []
    for r in provider.requests:
        try:
            body = _json.dumps(_json.loads(r["body"]), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            body = r["body"].decode("utf-8", "replace")
        out.append((urlsplit(r["path"]).path, body))
    return out


def recorded_calls(db) -> list[tuple[str, str]]:
    """(path, stored request body) of every LLM call in the database, the same shape as provider_saw()."""
    from urllib.parse import urlsplit

    rows = db.execute("SELECT c.path, b.content FROM calls c LEFT JOIN bodies b ON b.id = c.request_body"
                      " WHERE c.method = 'POST' ORDER BY c.seq").fetchall()
    return [(urlsplit(path).path, content.decode() if isinstance(content, bytes) else content) for path, content in rows]


def assert_same_calls(provider, db) -> None:
    """The calls the provider saw are the calls in the database, one for one (order aside: concurrent
    calls may reach the provider in another order than the proxy dispatched them)."""
    saw, stored = sorted(provider_saw(provider)), sorted(recorded_calls(db))
    assert saw == stored, f"provider saw {len(saw)} call(s), the database holds {len(stored)}"
