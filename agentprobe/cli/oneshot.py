"""The body of `trace --config --prompt`: record, print the answers, scan the run."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from .. import oneshot
from ..capture.session import Recording
from ..checks import agent_config as agent_config
from ..checks import scan_runs
from ..proxy.runner import ProxyConfig
from ..store.db import open_db
from .capture import print_summary
from .errors import UserError


def trace_prompt(db, proxy: ProxyConfig, config_path: Path, prompt: str, env: str | None, times: int,
                 base_url: str | None, label: str | None, otlp_endpoint: str | None, as_json: bool) -> int:
    try:
        config = agent_config.load(config_path)
        plan = oneshot.plan(config, env, base_url)
    except (agent_config.ConfigError, oneshot.OneShotError) as e:
        raise UserError(str(e)) from None
    command = shlex.join(["agentprobe", "trace", "--config", str(config_path), "--prompt", prompt]
                         + (["--env", plan.env] if plan.env else []) + (["--times", str(times)] if times > 1 else []))
    recording = Recording(db, proxy, label=label or plan.env, command=command,
                          config_sha256=config["_config_sha256"], otlp_endpoint=otlp_endpoint).start()
    answers = []
    try:
        for i in range(times):
            answer = oneshot.send(plan, prompt, recording.url, recording._bundle)
            answers.append(answer)
            if not as_json:
                head = f"[{i + 1}/{times}] " if times > 1 else ""
                if answer.error:
                    click.echo(f"{head}error: {answer.error}", err=True)
                else:
                    click.echo(f"{head}{answer.text}" + (f"  ({answer.finish_reason})" if times > 1 else ""))
    finally:
        recording.stop(status="completed")
    database = open_db(db)
    findings = scan_runs(database, [recording.run_id], config=config, env=plan.env)
    texts = [a.text for a in answers if a.error is None]
    failed = sum(a.error is not None for a in answers)
    if as_json:
        click.echo(json.dumps({
            "run_id": recording.run_id, "provider": plan.provider, "model": plan.model, "env": plan.env,
            "settings": plan.settings, "answers": [a.__dict__ for a in answers],
            "distinct_answers": len(set(texts)), "errors": failed,
            "findings": [f.to_dict() for f in findings],
        }, indent=2, default=str))
    else:
        print_summary(db, recording.run_id)
        settings = ", ".join(f"{k}={v}" for k, v in plan.settings.items()) or "provider defaults"
        if times > 1:
            click.echo(f"agentprobe: {len(texts)} answer(s), {len(set(texts))} distinct, at {settings}"
                       + (f"; {failed} failed" if failed else ""), err=True)
        from ..report.console import print_findings

        print_findings(findings, {"runs": [recording.run_id], "config": str(config_path)})
    return 1 if failed else 0
