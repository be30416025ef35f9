# agentprobe's sitecustomize. `agentprobe trace` puts this directory first on the traced
# command's PYTHONPATH (it holds nothing else), so every Python process of the agent runs this
# at start-up. It does three things and must never break the agent:
#   1. When aiohttp.client is first imported, ClientSession defaults to trust_env=True, so it
#      honours HTTPS_PROXY and the CA bundle like every other client (aiohttp's own default is
#      False: it ignores the proxy and goes direct). A trust_env the agent passes is respected,
#      and sessions switched on only here do not start reading ~/.netrc for credentials.
#   2. It takes its directory off sys.path again (child processes still inherit PYTHONPATH).
#   3. It runs the sitecustomize it shadows (the user's, a virtualenv's, the distribution's), as
#      Python would have.
# Plain syntax only: any Python the PYTHONPATH reaches must be able to parse it.
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_DEBUG = bool(os.environ.get("AGENTPROBE_PYHOOK_DEBUG"))


def _say(message):
    if _DEBUG:
        sys.stderr.write("agentprobe pyhook: " + message + "\n")


def _trust_env_by_default(module):
    import functools
    import weakref

    session = getattr(module, "ClientSession", None)
    if session is None or getattr(session.__init__, "_agentprobe", False):
        return
    init = session.__init__
    switched_on = weakref.WeakSet()

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "trust_env" not in kwargs:
            kwargs["trust_env"] = True
            switched_on.add(self)
        init(self, *args, **kwargs)

    __init__._agentprobe = True
    session.__init__ = __init__
    netrc = getattr(session, "_get_netrc_auth", None)
    if netrc is not None:
        @functools.wraps(netrc)
        def _get_netrc_auth(self, host):
            return None if self in switched_on else netrc(self, host)

        session._get_netrc_auth = _get_netrc_auth
    _say("aiohttp.ClientSession now defaults to trust_env=True")


_AFTER_IMPORT = {"aiohttp.client": _trust_env_by_default}


class _Loader(object):
    """The real loader of a module in _AFTER_IMPORT, then our change to the module."""

    def __init__(self, loader, change):
        self._loader = loader
        self._change = change

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            self._change(module)
        except Exception as e:  # an aiohttp this was not written for: leave it as it is
            _say("could not change %s: %r" % (module.__name__, e))

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder(object):
    def find_spec(self, name, path=None, target=None):
        change = _AFTER_IMPORT.get(name)
        if change is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, change)
                return spec
        return None


def _ours(entry):
    try:
        return os.path.abspath(entry or os.curdir) == _HERE
    except Exception:
        return False


def _run_the_shadowed_sitecustomize():
    import importlib.machinery
    import importlib.util

    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [p for p in sys.path if not _ours(p)])
    if spec is None or spec.loader is None:
        return
    _say("running " + str(spec.origin))
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # what site.py does with a failing sitecustomize
        sys.stderr.write("Error in sitecustomize; set PYTHONVERBOSE for traceback:\n%s: %s\n"
                         % (e.__class__.__name__, e))


def _start():
    try:
        if "aiohttp.client" in sys.modules:
            _trust_env_by_default(sys.modules["aiohttp.client"])
        elif not any(isinstance(f, _Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
    except Exception as e:
        _say("could not arm the aiohttp change: %r" % (e,))
    try:
        sys.path[:] = [p for p in sys.path if not _ours(p)]
    except Exception:
        pass
    try:
        _run_the_shadowed_sitecustomize()
    except Exception as e:
        _say("could not run the shadowed sitecustomize: %r" % (e,))


_start()
