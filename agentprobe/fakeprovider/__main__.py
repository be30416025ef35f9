"""`python -m agentprobe.fakeprovider`: serve plain HTTP until killed.

The single stdout line is the contract with scripts and the demo: they read it
to learn the port, so nothing else may be printed there.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import FakeProvider


def main(argv: list[str] | None = None) -> int:
    from .directives import HEADER, _CONVERTERS

    epilog = (f"Script any answer with a `{HEADER}: key=value; ...` request header or a `[fake key=value ...]`"
              " block in the last user message (the header wins), e.g. `[fake status=500]`,"
              " `[fake status=429 retry_after=1 fail_times=1]`, `[fake cut_after=3]`, `[fake encoding=gzip]`."
              f" Keys: {', '.join(_CONVERTERS)}. An unknown key or a bad value is answered with a 400.")
    parser = argparse.ArgumentParser(prog="python -m agentprobe.fakeprovider", description=__doc__, epilog=epilog)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--vary", action="store_true", help="random replies unless temperature is 0")
    args = parser.parse_args(argv)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with FakeProvider(args.host, args.port, vary=args.vary) as provider:
        print(f"listening on {provider.url}", flush=True)
        try:
            while not stopped.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
