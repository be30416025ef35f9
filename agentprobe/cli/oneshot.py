"""The body of `trace --config --prompt`: record, print the answers, scan the run."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import click

from ..capture import redact
from ..capture.session import Recording
from ..checks import agent_config, scan_runs
from ..clients import oneshot
from ..clients.credentials import PLACEHOLDER_KEY, api_key
from ..clients.send import Route, SendError, send
from ..proxy.runner import ProxyConfig
from ..report.console import print_summary
from ..store.db import open_db
from ..store.queries import summarize
from .errors import UserError


def trace_prompt(db, proxy: ProxyConfig, config_path: Path, prompt: str | None, env: str | None, times: int,
                 base_url: str | None, label: str | None, otlp_endpoint: str | None, as_json: bool,
                 cases_path: Path | None = None) -> int:
    try:
        config = agent_config.load(config_path)
        cases = oneshot.load_cases(cases_path) if cases_path is not None else [{"id": None, "prompt": prompt}]
        request, env = oneshot.plan(config, env, cases[0]["prompt"], base_url)
    except (agent_config.ConfigError, oneshot.OneShotError) as e:
        raise UserError(str(e)) from None
    # The key this sends is a secret of the prompt too (pasted into it, or echoed in an answer).
    key = api_key(request.provider, request.base_url, os.environ)
    secrets = redact.merged_secrets([key] if key != PLACEHOLDER_KEY else [])
    what = ["--cases", str(cases_path)] if cases_path is not None else ["--prompt", prompt]
    command = shlex.join(["agentprobe", "trace", "--config", str(config_path), *what]
                         + (["--env", env] if env else []) + (["--times", str(times)] if times > 1 else []))
    command = redact.scrub_command(command, secrets)

    def shown(text: str | None) -> str | None:
        return redact.scrub_text(text, secrets, json_fields=redact.looks_like_json(text)) if text else text

    recording = Recording(db, proxy, label=label or env, command=command,
                          config_sha256=config["_config_sha256"], otlp_endpoint=otlp_endpoint).start()
    answers = []
    total = times * len(cases)
    try:
        for i in range(total):
            case = cases[i // times]
            request.prompt = case["prompt"]
            # No retries: the recording shows exactly what the config sends, once per --times.
            try:
                answer = send(request, Route(recording.url, recording._bundle, max_retries=0))
                answers.append({"text": shown(answer.text), "finish_reason": answer.finish_reason, "error": None})
            except SendError as e:
                answers.append({"text": None, "finish_reason": None, "error": shown(str(e))})
            if case["id"] is not None:
                answers[-1]["id"] = case["id"]
            if not as_json:
                a = answers[-1]
                head = f"[{i + 1}/{total}] " if total > 1 else ""
                if case["id"] is not None:
                    head = f"[{case['id']}] " + (f"[{i % times + 1}/{times}] " if times > 1 else "")
                if a["error"]:
                    click.echo(f"{head}error: {a['error']}", err=True)
                else:
                    click.echo(f"{head}{a['text']}" + (f"  ({a['finish_reason']})" if times > 1 else ""))
    finally:
        recording.stop(status="completed")
    database = open_db(db)
    findings = scan_runs(database, [recording.run_id], config=config, env=env)
    texts = [a["text"] for a in answers if a["error"] is None]
    failed = sum(a["error"] is not None for a in answers)
    if as_json:
        click.echo(json.dumps({
            "run_id": recording.run_id, "provider": request.provider, "model": request.model, "env": env,
            "settings": request.settings, "answers": answers,
            "distinct_answers": len(set(texts)), "errors": failed,
            "findings": [f.to_dict() for f in findings],
        }, indent=2, default=str))
    else:
        print_summary(summarize(database, recording.run_id))
        settings = ", ".join(f"{k}={v}" for k, v in request.settings.items()) or "provider defaults"
        if times > 1 and cases_path is None:
            click.echo(f"agentprobe: {len(texts)} answer(s), {len(set(texts))} distinct, at {settings}"
                       + (f"; {failed} failed" if failed else ""), err=True)
        from ..report.console import print_findings

        print_findings(findings, {"runs": [recording.run_id], "config": str(config_path)})
    return 1 if failed else 0
