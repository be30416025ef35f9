"""Run mitmproxy inside this process, on its own thread and event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .upstream_proxy import UpstreamProxy

log = logging.getLogger("agentprobe.proxy")


class ProxyStartError(Exception):
    pass


def _quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    # Connections still open at shutdown are cancelled; that is expected, not an error to print.
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


@dataclass
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 0
    confdir: Path = field(default_factory=lambda: Path.home() / ".agentprobe")
    upstream: str | None = None  # reverse mode target, e.g. https://api.openai.com
    upstream_ca: Path | None = None  # extra CA to trust for upstream servers (tests, corporate CAs)
    ssl_insecure: bool = False
    fastpath: frozenset[str] | None = None  # patches asked for; None: $AGENTPROBE_FASTPATH, else all
    upstream_proxy: "UpstreamProxy | None" = None  # the user's own proxy, to forward through (regular mode)

    def __post_init__(self) -> None:
        if self.upstream:
            check_upstream(self.upstream)
        if self.upstream and self.upstream_proxy:
            from ..capture.redact import safe_url

            raise ProxyStartError(
                f"reverse mode (--upstream {safe_url(self.upstream)}) cannot forward through the proxy"
                f" {self.upstream_proxy.display}: use the regular mode (HTTPS_PROXY) there, or --upstream-proxy none")


def check_upstream(url: str) -> None:
    """Refuse a reverse-mode target mitmproxy would refuse, before anything else starts."""
    from mitmproxy.proxy.mode_specs import ProxyMode

    try:
        ProxyMode.parse(f"reverse:{url}")
    except ValueError as e:
        raise ProxyStartError(f"--upstream {url} is not a server mitmproxy can forward to ({e}): give"
                              " scheme://host[:port] with no path, e.g. https://api.openai.com") from None


def check_listen(host: str, port: int) -> None:
    """Bind host:port and let go again, so a port in use is reported before the database is touched.

    The socket options are asyncio's (which mitmproxy listens with): SO_REUSEADDR, so a port left in
    TIME_WAIT by a proxy that just stopped counts as free, as it is for mitmproxy.
    """
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ProxyStartError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as e:
                raise ProxyStartError(
                    f"cannot listen on {host}:{port}: {e.strerror or e} (another agentprobe or program may have"
                    " it): pick another --port, or --port 0 for any free one") from None


_active_lock = threading.Lock()
_active: "ProxyThread | None" = None


class ProxyThread:
    """start() blocks until the proxy listens (or failed); stop() shuts it down cleanly.

    One per process: mitmproxy keeps its master in a module-global context, so a
    second master in the same process would receive the first one's flows.
    """

    def __init__(self, config: ProxyConfig, addons: list) -> None:
        self.config = config
        self.addons = addons
        self.master = None
        self.fastpath = None  # the fastpath.Plan in force, once started
        self.address: tuple[str, int] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="agentprobe-proxy", daemon=True)

    @property
    def url(self) -> str:
        assert self.address
        return f"http://{self.address[0]}:{self.address[1]}"

    def start(self, timeout: float = 15) -> tuple[str, int]:
        global _active
        with _active_lock:
            if _active is not None and _active._thread.is_alive():
                raise ProxyStartError("a proxy is already running in this process; run another agentprobe process")
            _active = self
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ProxyStartError("the proxy did not start within %ss" % timeout)
        if self._error is not None:
            raise ProxyStartError(str(self._error))
        assert self.address
        return self.address

    def stop(self, timeout: float = 15) -> None:
        if self.master is not None:
            self.master.shutdown()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - reported to start()
            if not self._ready.is_set():
                self._error = e
            else:
                log.exception("proxy stopped with an error")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        from mitmproxy import options
        from mitmproxy.addons import default_addons
        from mitmproxy.master import Master

        from . import fastpath
        from .trust import upstream_trust

        self.fastpath = fastpath.install(self.config.fastpath)
        asyncio.get_running_loop().set_exception_handler(_quiet_cancellation)
        cfg = self.config
        mode = f"reverse:{cfg.upstream}" if cfg.upstream else "regular"
        opts = options.Options(
            listen_host=cfg.host, listen_port=cfg.port, mode=[mode], confdir=str(cfg.confdir)
        )
        master = Master(opts)
        fastpath.adopt(master)
        master.addons.add(*fastpath.default_addons(default_addons()))
        if cfg.upstream_proxy is not None:
            from ..addons.upstream_proxy import ChainUpstream

            master.addons.add(ChainUpstream(cfg.upstream_proxy))
        master.addons.add(*self.addons)
        updates = {
            "connection_strategy": "lazy",
            "ssl_insecure": cfg.ssl_insecure,
        }
        # Public roots, the user's own roots and --upstream-ca: mitmproxy's option replaces its defaults.
        updates["ssl_verify_upstream_trusted_ca"] = str(upstream_trust(cfg.confdir, cfg.upstream_ca))
        if cfg.upstream:
            updates["keep_host_header"] = False
        opts.update(**updates)
        self.master = master

        ps = master.addons.get("proxyserver")
        ok = await ps.setup_servers()
        addrs = ps.listen_addrs()
        if not ok or not addrs:
            raise ProxyStartError(
                f"could not listen on {cfg.host}:{cfg.port} (address in use or not permitted)"
            )
        self.address = (cfg.host, addrs[0][1])
        # Everything loaded so far (mitmproxy, the addons, their modules) lives as long as the
        # proxy: keep the cyclic GC's full collections from walking it again and again, each a
        # pause of ~0.1 s on a slow machine that the agent would feel as latency.
        gc.freeze()
        run = asyncio.ensure_future(master.run())
        self._ready.set()
        await run
