"""`analyze`: the failure analyst prompt, filled with measured evidence, optionally sent to a model."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from ..analyze import PROMPT_VERSION, InvalidAnswer, parse_answer, render
from ..analyze.evidence import fit, gather
from ..clients.credentials import MissingKey
from ..clients.send import Request, Route, SendError, send
from ..store.db import open_db, resolve_path
from ..store.queries import resolve_run
from ..util.userfile import read_user_text
from .common import check_environment, db_option, load_config
from .errors import UserError
from .output import json_option

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

# The SDKs that can send the analyst prompt (Gemini's REST path is only for one-shot traces).
ANALYSTS = ("openai", "anthropic")


def _read(path: Path, what: str) -> str:
    text = read_user_text(path, f"{what} file", UserError, hint=f"give the {what} in fewer words")
    if not text.strip():
        raise UserError(f"the {what} file {path} is empty: describe the {what} in it")
    return text


def _raw_path(db, save_raw: Path | None) -> Path:
    if save_raw:
        return save_raw
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return resolve_path(db).parent / f"analysis-{stamp}.raw.txt"


def _save(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot save the raw answer to {path}: {e.strerror}; pass --save-raw PATH") from None


@click.command()
@db_option
@click.option("--architecture", type=_FILE, help="The agent's design: models, tools, loop, retries (markdown).")
@click.option("--scenario", type=_FILE, help="What went wrong, as observed (markdown).")
@click.option("--run", "run_refs", multiple=True,
              help="Recorded run (id, prefix or 'latest') whose findings and statistics become evidence; repeatable.")
@click.option("--config", "config_path", type=_FILE, help="Agent config (agent_config.json) to add as evidence.")
@click.option("--env", "env_name", help="Config environment the runs should match (default: the run's label).")
@click.option("--budget", type=click.IntRange(100), default=4000, show_default=True,
              help="Most tokens the evidence section may take; the least severe evidence is left out first.")
@click.option("--print", "print_only", is_flag=True, help="Write the prompt to stdout and send nothing (the default"
              " without --model).")
@click.option("--model", help="Send the prompt to this model and check its answer.")
@click.option("--provider", type=click.Choice(ANALYSTS), default="openai", show_default=True,
              help="Whose SDK sends it; the key comes from OPENAI_API_KEY or ANTHROPIC_API_KEY.")
@click.option("--base-url", help="An OpenAI-compatible (or Anthropic-compatible) server to send to instead.")
@click.option("--max-retries", type=click.IntRange(0), default=2, show_default=True,
              help="Retries the SDK makes on 429, 5xx and connection errors.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=300, show_default=True,
              help="Seconds per attempt.")
@click.option("--max-tokens", type=click.IntRange(1), help="Output limit for the answer (anthropic default 8192).")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Sent only when given.")
@json_option("the validated analysis")
@click.option("--save-raw", type=click.Path(dir_okay=False, path_type=Path),
              help="Keep the model's raw answer here (an invalid answer is always kept, by default beside the DB).")
@click.option("--answer", "answer_path", type=_FILE,
              help="Check an answer obtained elsewhere (e.g. from pasting the --print prompt) instead of sending.")
def analyze(db, architecture, scenario, run_refs, config_path, env_name, budget, print_only, model, provider,
            base_url, max_retries, timeout, max_tokens, temperature, as_json, save_raw, answer_path):
    """Ask a model which of the six failure modes explain an incident, with agentprobe's measurements
    as evidence, and check that its answer follows the analysis structure.

    \b
    agentprobe analyze --architecture arch.md --scenario incident.md --run latest --print
    agentprobe analyze --architecture arch.md --scenario incident.md --run latest --model gpt-4.1
    agentprobe analyze ... --provider anthropic --model claude-sonnet-4-6 --json
    agentprobe analyze --answer saved_answer.xml      # check an answer from elsewhere

    Exit codes: 0 a valid analysis (or the prompt), 1 the answer breaks the structure (the raw
    answer is saved and its path printed), 2 bad input or a provider error.
    """
    meta = {"prompt_version": PROMPT_VERSION, "provider": provider if model else None, "model": model}
    if answer_path:
        return _report(_read(answer_path, "answer"), None, meta, as_json, None, saved=answer_path)
    if not architecture or not scenario:
        raise click.UsageError("--architecture and --scenario are required (or --answer to check a saved answer)")

    config = load_config(config_path)
    check_environment(config, env_name)
    section = None
    if run_refs or config:
        database = open_db(db) if run_refs else None
        run_ids = list(dict.fromkeys(resolve_run(database, ref) for ref in run_refs))
        section = fit(gather(database, run_ids, config, env_name), budget, model)
        meta["evidence"] = section.to_dict()
        meta["runs"] = run_ids
    prompt = render(_read(architecture, "architecture"), _read(scenario, "scenario"),
                    section.text if section else None)

    if print_only or not model:
        click.echo(prompt)
        if section:
            trimmed = f", {len(section.dropped)} item(s) left out" if section.dropped else ""
            click.echo(f"agentprobe: prompt {PROMPT_VERSION}; evidence {section.tokens:,} of {budget:,} tokens"
                       f" ({section.tokenizer}){trimmed}", err=True)
        return 0
    try:
        answer = send(Request(provider=provider, model=model, prompt=prompt, base_url=base_url,
                              settings={"max_tokens": max_tokens, "temperature": temperature}),
                      Route(max_retries=max_retries, timeout=timeout))
    except (SendError, MissingKey) as e:
        raise UserError(str(e)) from None
    meta.update(answered_by=answer.model, finish_reason=answer.finish_reason,
                usage={"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens})
    if save_raw:
        _save(save_raw, answer.text)
    return _report(answer.text, answer.finish_reason, meta, as_json, _raw_path(db, save_raw), saved=save_raw)


def _report(text: str, finish_reason: str | None, meta: dict, as_json: bool, raw_path: Path | None,
            saved: Path | None) -> int:
    try:
        analysis = parse_answer(text, finish_reason)
    except InvalidAnswer as e:
        if saved is None:
            _save(raw_path, text)
            saved = raw_path
        who = f" from {meta['model']}" if meta.get("model") else ""
        click.echo(f"agentprobe: error: invalid answer{who}: {e} (raw answer saved to {saved})", err=True)
        return 1
    if as_json:
        click.echo(json.dumps({**meta, **analysis.to_dict()}, indent=2))
    else:
        from ..report.console import print_analysis

        print_analysis(analysis, meta)
    return 0


COMMANDS = [analyze]
