"""The environment that steers a traced command's every client through the proxy.

Each setting exists because some client ignores the others (each seen on these machines):
- HTTPS_PROXY/HTTP_PROXY in both cases (curl reads only the lower-case http_proxy);
- NO_PROXY and no_proxy emptied: shells and images often exclude localhost, which hides every
  call to a local model server (vLLM, Ollama, LM Studio); the lower-case one wins where both are set;
- SSL_CERT_FILE, REQUESTS_CA_BUNDLE (requests reads only this one), CURL_CA_BUNDLE and
  NODE_EXTRA_CA_CERTS: the bundle of public roots, the user's own roots and the proxy CA;
- PYTHONPATH led by agentprobe's sitecustomize, for aiohttp (it ignores the proxy unless
  trust_env=True, and so does everything built on it);
- JAVA_TOOL_OPTIONS with the proxy properties and a truststore: the JVM reads none of the above,
  and skips the proxy for loopback hosts unless http.nonProxyHosts is emptied;
- NODE_OPTIONS with agentprobe's preload (nodehook/agentprobe-node.cjs, no npm package needed): Node's
  built-in fetch ignores the proxy variables before Node 24 (and without NODE_USE_ENV_PROXY after),
  and its http/https modules ignore them on every version.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from urllib.parse import urlsplit

PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")
TRUST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
PYTHON_HOOK_DIR = Path(__file__).resolve().parent / "pyhook"
NODE_PRELOAD = Path(__file__).resolve().parent / "nodehook" / "agentprobe-node.cjs"


def child_env(proxy_url: str, bundle: Path, base: dict[str, str] | None = None, *, python_hook: bool = True,
              java_truststore: Path | None = None, node_preload: Path | None = NODE_PRELOAD,
              node_report: Path | None = None) -> dict[str, str]:
    """Environment for a process whose traffic should go through the proxy.

    node_report: a file the Node preload appends one line per process to (which route it took).
    """
    env = dict(os.environ if base is None else base)
    for name in PROXY_VARIABLES:
        env[name] = proxy_url
    for name in NO_PROXY_VARIABLES:
        env[name] = ""
    for name in TRUST_VARIABLES:
        env[name] = str(bundle)
    if python_hook:
        # No trailing separator when there was no PYTHONPATH: an empty entry means the current directory.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PYTHON_HOOK_DIR), env.get("PYTHONPATH")]))
    if java_truststore is not None:
        env["JAVA_TOOL_OPTIONS"] = " ".join(filter(None, [env.get("JAVA_TOOL_OPTIONS"),
                                                          java_options(proxy_url, java_truststore)]))
    if node_preload is not None and f"--require={_node_quoted(node_preload)}" not in env.get("NODE_OPTIONS", ""):
        env["NODE_OPTIONS"] = " ".join(filter(None, [env.get("NODE_OPTIONS"),
                                                     f"--require={_node_quoted(node_preload)}"]))
    if node_report is not None:
        env["AGENTPROBE_NODE_REPORT"] = str(node_report)
    return env


def _node_quoted(path: Path) -> str:
    # Node splits NODE_OPTIONS on white space and honours double quotes.
    text = str(path)
    return f'"{text}"' if " " in text else text


def java_options(proxy_url: str, truststore: Path) -> str:
    """System properties that send a JVM's HttpClient and HttpURLConnection through the proxy.

    Appended after the user's own JAVA_TOOL_OPTIONS so that these win; an application's own -D
    flags on its command line still take precedence over both.
    """
    from .java_trust import PASSWORD

    where = urlsplit(proxy_url)
    host, port = where.hostname or "127.0.0.1", where.port or 8080
    props = [f"-Dhttps.proxyHost={host}", f"-Dhttps.proxyPort={port}", f"-Dhttp.proxyHost={host}",
             f"-Dhttp.proxyPort={port}",
             # Empty, not absent: the JDK's default list sends localhost and 127.* direct, and a
             # non-empty value of ours would have that default appended to it.
             "-Dhttp.nonProxyHosts=",
             f"-Djavax.net.ssl.trustStore={truststore}", f"-Djavax.net.ssl.trustStorePassword={PASSWORD}",
             "-Djavax.net.ssl.trustStoreType=PKCS12"]
    # The JVM splits JAVA_TOOL_OPTIONS on white space and honours double quotes.
    return " ".join(f'"{p}"' if " " in p else p for p in props)


# Variables a shell may already hold for its own reasons: the exports put ours in front of its value.
EXTENDED = {"PYTHONPATH": os.pathsep, "NODE_OPTIONS": " ", "JAVA_TOOL_OPTIONS": " "}


def shell_exports(env: dict[str, str]) -> str:
    lines = []
    for name, value in env.items():
        joiner = EXTENDED.get(name)
        keep = f'"${{{name}:+{joiner}${name}}}"' if joiner else ""
        lines.append(f"export {name}={shlex.quote(value)}{keep}")
    return "\n".join(lines)


def node_processes_not_steered(report: Path) -> list[dict]:
    """Node processes whose fetch the preload could not send through the proxy (from its report file)."""
    import json

    try:
        lines = report.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("fetch") == "off" and entry.get("notes"):
            out.append(entry)
    return out
