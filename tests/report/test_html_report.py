"""`agentprobe report`: runs recorded through the real proxy, rendered to one HTML file, then
checked as text and as a page headless Chromium actually draws."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agentprobe.fakeprovider import FakeProvider
from proxy_fixtures import Recorded, run_cli, staggered_calls

PLANTED_SCRIPT = "<script>alert('planted')</script>"
PLANTED_MODEL = "<img src=x onerror=alert(2)>"
SYSTEM_A = f"You are a careful analyst.\nAnswer in English. {PLANTED_SCRIPT}\nCite sources."
SYSTEM_B = "You are a careful analyst.\nAnswer in French.\nCite sources."


def _agent(recorded: Recorded, provider: FakeProvider, system: str, odd_model: str) -> None:
    """A small agent: a two-turn conversation, two parallel calls, a swallowed 500, an odd model."""
    import openai

    client = recorded.openai(provider, max_retries=0)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Summarise the report."}]
    first = client.chat.completions.create(model="gpt-4o-mini", temperature=0, messages=messages,
                                           extra_headers={"x-fake": "words=120"})
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Now in more detail. " * 40}]
    client.chat.completions.create(model="gpt-4o-mini", temperature=0, messages=messages)
    # Sent first, answered last: the slow call finishes after the one sent after it.
    staggered_calls(client, (0.3, 0.02), "part ", temperature=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="house-7b", temperature=0, messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-fake": "status=500"})
    client.chat.completions.create(model=odd_model, temperature=0, messages=[{"role": "user", "content": "y"}])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tls_ca):
    """Two runs in one database, differing in their system prompt; recorded once for the module."""
    tmp = tmp_path_factory.mktemp("report")
    ca_bundle = tmp / "fake-ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_bundle))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ids = []
    with FakeProvider(ssl_context=context) as provider:
        for system, model in ((SYSTEM_A, "house-7b"), (SYSTEM_B, PLANTED_MODEL)):
            recorded = Recorded(tmp, ca_bundle)
            try:
                _agent(recorded, provider, system, model)
            finally:
                recorded.stop()
            ids.append(recorded.recording.run_id)
    return tmp / "agentprobe.db", ids, tmp


@pytest.fixture(scope="module")
def two_run_report(runs):
    db, (a, b), tmp = runs
    out = tmp / "compare.html"
    r = run_cli("report", a, b, "-o", str(out), "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stderr
    return out


class Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str | None = None, cls: str | None = None, **attrs) -> list[dict]:
        return [a for t, a in self.tags if (tag is None or t == tag)
                and (cls is None or cls in a.get("class", "").split())
                and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def _external_references(text: str) -> list[str]:
    return re.findall(r"""(?:\b(?:src|href|action|poster|data|xlink:href)\s*=\s*["']?\s*(?:https?:)?//[^"'\s>]*"""
                      r"""|url\(\s*["']?\s*(?:https?:)?//[^)]*|@import)""", text, re.IGNORECASE)


def test_report_sections_and_marks(two_run_report, runs):
    _, (a, b), _ = runs
    text = two_run_report.read_text()
    page = Elements(text)
    for section in ("summary", "findings", "timeline", "context", "usage", "calls", "prompt-diff"):
        assert page.find("section", id=section), section
    # Timeline: one bar per call in each run, overlapping calls on separate lanes.
    for run in (a, b):
        [svg] = page.find("svg", cls="timeline", data_run=run)
        assert svg["data-lanes"] == "2"
    bars = page.find("rect", cls="bar")
    assert len(bars) == 12
    assert len(page.find("rect", cls="error")) == 2  # the 500 in each run
    assert len(page.find("rect", cls="inverted")) == 4  # the slow call and the one that beat it, per run
    assert len(page.find("line", cls="inversion-link")) == 2
    seqs = [g["data-seq"] for g in page.find("g", cls="call")]
    assert seqs == [str(i) for i in range(1, 7)] * 2
    # Context growth: gpt-4o-mini against its 128k window with the 75% line; house-7b said to be unknown.
    charts = page.find("svg", cls="context-chart", data_model="gpt-4o-mini")
    assert [c["data-window"] for c in charts] == ["128000", "128000"]
    assert page.find("line", cls="threshold") and page.find("line", cls="window")
    assert "The context window of house-7b is unknown" in text
    assert len(page.find("polyline", cls="growth")) >= 2  # the two-turn conversation, drawn in each scale
    assert page.find("svg", cls="usage-chart", data_run=a) and page.find("g", cls="error-mark")
    # Findings carry their evidence and link to the calls they cite.
    rules = {f["data-rule"] for f in page.find("article", cls="finding")}
    assert {"race_condition/completion_inversion", "api_latency/swallowed_error",
            "prompt_drift/system_prompt_changed"} <= rules
    assert page.find("a", href=f"#call-{a}-5") and page.find("tr", id=f"call-{a}-5")
    # Summary numbers for run A.
    assert re.search(r'<td data-key="calls">6</td>', text)
    assert '<td data-key="errors by status">500 ×1</td>' in text
    # The prompt diff reads as an edit of one line.
    assert page.find("div", cls="del") and page.find("div", cls="add")
    assert '<div class="add">+Answer in French.</div>' in text
    assert "<div class=\"del\">-Answer in English. &lt;script&gt;alert(&#x27;planted&#x27;)&lt;/script&gt;</div>" in text


def test_report_escapes_recorded_strings_and_needs_no_network(two_run_report):
    text = two_run_report.read_text()
    assert PLANTED_SCRIPT not in text and "&lt;script&gt;alert(&#x27;planted&#x27;)" in text
    assert PLANTED_MODEL not in text and "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "<img" not in text
    assert text.count("<script") == 1  # ours, carrying the CSP nonce
    assert re.search(r"<script nonce=\"[\w-]{16,}\">", text)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert "default-src &#x27;none&#x27;" in csp
    assert _external_references(text) == []
    assert "http://" not in text and "https://" not in text
    assert _external_references('<link href="https://cdn.example/x.css">') != []  # the check itself bites


def test_single_run_report_defaults_to_latest(runs):
    db, (_, b), tmp = runs
    out = tmp / "latest.html"
    r = run_cli("report", "-o", str(out), "--db", str(db))
    assert r.returncode == 0, r.stderr
    page = Elements(out.read_text())
    assert page.find("body", data_runs=b)
    assert not page.find("section", id="prompt-diff")
    assert len(page.find("rect", cls="bar")) == 6
    stdout = run_cli("report", b[:10], "-o", "-", "--db", str(db))
    assert stdout.returncode == 0 and stdout.stdout.startswith("<!DOCTYPE html>")


def test_config_supplies_unknown_windows(runs):
    db, (a, _), tmp = runs
    config = tmp / "agent_config.json"
    config.write_text('{"model": "gpt-4o-mini", "models": {"house-7b": 32000}}')
    out = tmp / "with-config.html"
    r = run_cli("report", a, "--config", str(config), "-o", str(out), "--db", str(db))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    page = Elements(text)
    assert [c["data-window"] for c in page.find("svg", cls="context-chart", data_model="house-7b")] == ["32000"]
    assert "is unknown" not in text
    assert "context_overflow/unknown_window" not in {f["data-rule"] for f in page.find("article", cls="finding")}


@pytest.mark.parametrize("args,needle", [
    (["NOSUCHRUN"], "no run 'NOSUCHRUN'"),
    (["{a}", "NOSUCHRUN"], "no run 'NOSUCHRUN'"),
    (["{a}", "{a}"], "same run"),
    (["{a}", "-o", "{tmp}/no/such/dir/r.html"], "cannot write"),
    (["{a}", "--context-threshold", "2"], "Invalid value"),
    (["{a}", "--config", "{tmp}/no-such-config.json"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(runs, args, needle):
    db, (a, _), tmp = runs
    r = run_cli("report", *[x.format(a=a, tmp=tmp) for x in args], "--db", str(db))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_missing_database_is_one_line_and_exit_2(tmp_path):
    r = run_cli("report", "latest", "-o", str(tmp_path / "r.html"), "--db", str(tmp_path / "none.db"))
    assert r.returncode == 2 and "no agentprobe database" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "none.db").exists()


# -- in a real browser --------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not on PATH: the HTML report is checked in headless Chromium; install it with"
                " `apt-get install -y chromium` (.ci/run does this when it runs as root)")


def _browse(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0", *args,
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90)


def _console_problems(stderr: str) -> list[str]:
    # Chromium logs each console message of the page as ":CONSOLE"; our script logs nothing, so any
    # such line (an uncaught exception, a CSP refusal, a failed load) is a fault.
    return [line for line in stderr.splitlines()
            if ":CONSOLE" in line or "Uncaught" in line or "Refused to" in line]


def test_report_renders_in_headless_chromium(two_run_report, runs):
    from PIL import Image

    _, (a, _), tmp = runs
    dom = _browse(two_run_report, tmp, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_problems(dom.stderr) == []
    rendered = Elements(dom.stdout)
    [body] = rendered.find("body")
    assert body.get("data-report-ready") == "true", "the page's script did not run to its end"
    assert "data-js-error" not in body
    assert body["data-bars"] == "12"  # the script saw every timeline bar in the live DOM
    assert len(rendered.find("rect", cls="bar")) == 12 and rendered.find("rect", cls="inverted")
    assert rendered.find("svg", cls="context-chart") and rendered.find("line", cls="threshold")
    assert "<img" not in dom.stdout and dom.stdout.count("<script") == 1  # nothing planted came alive

    shot = tmp / "report.png"
    r = _browse(two_run_report, tmp, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    assert _console_problems(r.stderr) == []
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50, "the screenshot is nearly blank"
    background = max(colors)[0] / (image.width * image.height)
    assert background < 0.97, f"{background:.0%} of the screenshot is one colour"
    pixels = {rgb for _, rgb in colors}
    # The timeline's own colours (CSS --ok, --err, --inv) are on screen: the SVG was drawn.
    for name, rgb in (("call bar", (0x3B, 0x82, 0xF6)), ("error bar", (0xDC, 0x26, 0x26)),
                      ("inversion outline", (0xF5, 0x9E, 0x0B))):
        assert rgb in pixels, f"no {name} pixels in the screenshot"


def _detail(text: str, run: str, seq: int) -> str:
    m = re.search(rf'<tr class="detail" id="call-{run}-{seq}-detail" hidden>(.*?)</tr>', text, re.S)
    assert m, f"no expandable detail row for call {seq} of {run}"
    return m.group(1)


def test_each_call_row_expands_to_its_request_and_answer(two_run_report, runs):
    _, (a, b), _ = runs
    text = two_run_report.read_text()
    first = _detail(text, a, 1)
    # What `agentprobe show` prints: the system prompt, the messages, the settings and the answer.
    assert "You are a careful analyst." in first and "Summarise the report." in first
    assert "temperature=0" in first and "<h4>answer</h4><pre>" in first and "(no answer recorded)" not in first
    assert re.search(r"<b>usage</b> in [1-9][\d,]* / out [1-9]", first)
    assert "sent #1, finished #1" in first and "conversation " in first  # what narrow windows hide
    failed = _detail(text, b, 5)
    assert "server_error" in failed and "house-7b" not in _detail(text, b, 1)
    assert PLANTED_SCRIPT not in first  # the planted system prompt is escaped in the expansion too
    # The toggle sits in the row and names the detail row it opens.
    assert f'aria-controls="call-{a}-1-detail"' in text
    # B − A of 1 error against 1 is 0: a difference of nothing is never painted as worse.
    errors_row = re.search(r'<th scope="row">errors</th>(.*?)</tr>', text, re.S).group(1)
    assert '<td class="delta">0</td>' in errors_row and "worse" not in errors_row


@pytest.mark.parametrize("width", [800, 1400])
def test_report_fits_the_window_at_800_and_1400_px(two_run_report, runs, width):
    from PIL import Image

    _, (a, _), tmp = runs
    dom = _browse(two_run_report, tmp, "--dump-dom", f"--window-size={width},1600")
    assert dom.returncode == 0 and _console_problems(dom.stderr) == [], dom.stderr[-2000:]
    [body] = Elements(dom.stdout).find("body")
    assert body.get("data-report-ready") == "true"
    # No sideways scrolling: not the page, and no table in a box of its own.
    assert int(body["data-scroll-width"]) <= width, body["data-scroll-width"]
    assert body["data-overflowing"] == "", f"sections wider than {width} px: {body['data-overflowing']}"
    shot = tmp / f"report-{width}.png"
    r = _browse(two_run_report, tmp, f"--screenshot={shot}", f"--window-size={width},1600", "--hide-scrollbars")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50 and max(colors)[0] / (image.width * image.height) < 0.97, "a nearly blank page"


def test_a_link_to_a_call_opens_its_detail(two_run_report, runs):
    _, (a, _), tmp = runs
    page = two_run_report.resolve().as_uri() + f"#call-{a}-2"
    dom = subprocess.run(
        [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--dump-dom", page],
        capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'<tr class="detail" id="call-{a}-2-detail">' in dom.stdout  # opened: no longer hidden
    assert f'<tr class="detail" id="call-{a}-3-detail" hidden="">' in dom.stdout
