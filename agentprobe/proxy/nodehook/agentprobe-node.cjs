'use strict';
// agentprobe's Node.js preload (approach 1): make an unmodified Node agent send its HTTP(S)
// through the recording proxy named by HTTPS_PROXY / HTTP_PROXY.
//
//   NODE_OPTIONS="--require /abs/path/agentprobe-node.cjs" node agent.js     (CJS or ESM agent)
//
// fetch (Node's bundled undici), first route that applies wins:
//   native   Node already proxies fetch (NODE_USE_ENV_PROXY=1 on Node >= 22.21 / 24.5)
//   node-api http.setGlobalProxyFromEnv() exists (Node 24.x, 26): Node's own env-proxy code
//   builtin  an Agent of the *bundled* undici (its constructor taken from the default global
//            dispatcher) with a connector of ours that opens a CONNECT tunnel: no npm package,
//            and the handler API is by construction the one this Node's fetch speaks
//   undici   only if forced (AGENTPROBE_NODE_FETCH=undici) or builtin failed: an npm `undici`
//            whose engines fit this Node, from AGENTPROBE_UNDICI (a package dir or a dir holding
//            node_modules/undici), else the agent's own node_modules; its EnvHttpProxyAgent
//            becomes the global dispatcher
// core http/https (axios, node-fetch, https.request): the createConnection of http.Agent /
//   https.Agent (prototype, so agents the SDK makes itself too) opens a CONNECT tunnel through
//   the proxy, except for NO_PROXY hosts and for agents that Node already proxies.
//
// It never throws into the agent: any failure leaves that part unpatched and says so on stderr
// (and in AGENTPROBE_NODE_REPORT, a file that gets one JSON line per process, if set).
// AGENTPROBE_NODE_FETCH=native|node-api|undici|builtin|off forces a route (tests, debugging);
// AGENTPROBE_NODE_CORE=off leaves http/https alone.

const KEY = Symbol.for('agentprobe.node.preload');

function install(state) {
  const env = process.env;
  const httpsProxy = env.https_proxy || env.HTTPS_PROXY || '';
  const httpProxy = env.http_proxy || env.HTTP_PROXY || '';
  if (!httpsProxy && !httpProxy) {
    state.notes.push('no HTTPS_PROXY / HTTP_PROXY: nothing to do');
    return;
  }
  const proxies = { 'https:': parseProxy(httpsProxy || httpProxy), 'http:': parseProxy(httpProxy || httpsProxy) };
  const noProxy = parseNoProxy(env.no_proxy || env.NO_PROXY || '');

  state.fetch = setUpFetch(state, proxies, noProxy, env.AGENTPROBE_NODE_FETCH || 'auto');
  if ((env.AGENTPROBE_NODE_CORE || 'auto') !== 'off') state.core = setUpCore(state, proxies, noProxy);
}

// ---------------------------------------------------------------------------------- fetch

// Where the global dispatcher lives. Node's fetch reads the key of its *bundled* undici:
//   bundled undici <= 7 (Node 18-24) reads Symbol.for('undici.globalDispatcher.1');
//   bundled undici 8 (Node 26) reads ...globalDispatcher.2, and keeps a Dispatcher1Wrapper of that
//   agent under .1 for older undici copies. undici 7.30 writes both keys; undici 6 only .1, so an
//   undici 6 dispatcher is silently ignored by Node 26's fetch (measured).
const DISPATCHER = Symbol.for('undici.globalDispatcher.1');
const DISPATCHER2 = Symbol.for('undici.globalDispatcher.2');
const READS_V2 = Number(String(process.versions.undici || '0').split('.')[0]) >= 8;
const FETCH_KEY = READS_V2 ? DISPATCHER2 : DISPATCHER;

function bundledDispatcher() {
  // Touching a lazy undici global makes Node load its bundled undici, whose global.js installs
  // the default Agent if nothing is there yet.
  void globalThis.Headers;
  return globalThis[FETCH_KEY];
}

function installBundled(agent) {
  if (READS_V2) {
    const legacy = globalThis[DISPATCHER];
    globalThis[DISPATCHER2] = agent;
    if (legacy && legacy.constructor && legacy.constructor.name === 'Dispatcher1Wrapper') {
      globalThis[DISPATCHER] = new legacy.constructor(agent);
    }
  } else {
    globalThis[DISPATCHER] = agent;
    if (globalThis[DISPATCHER2]) globalThis[DISPATCHER2] = agent;
  }
}

function setUpFetch(state, proxies, noProxy, wanted) {
  if (wanted === 'off' || typeof globalThis.fetch !== 'function') return 'off';
  const current = bundledDispatcher();
  const currentName = current && current.constructor && current.constructor.name;
  const want = (route) => wanted === 'auto' || wanted === route;

  // NODE_USE_ENV_PROXY=1 on a Node that supports it (22.21+, 24.5+): Node configures
  // https.globalAgent before the preload runs but installs its EnvHttpProxyAgent for fetch only
  // *after* it (overwriting whatever we set), so the proxied global agent is the sign.
  if (want('native') && (currentName === 'EnvHttpProxyAgent' || (process.env.NODE_USE_ENV_PROXY && nativeCoreProxy()))) {
    return 'native';
  }

  // Node 24+: Node's own env-proxy code, switched on without NODE_USE_ENV_PROXY (whose
  // "experimental" warning it would print on 22.21+); also proxies http(s).globalAgent.
  if (want('node-api')) {
    const http = require('http');
    if (typeof http.setGlobalProxyFromEnv === 'function') {
      try {
        quietly(() => http.setGlobalProxyFromEnv(process.env));
        return 'node-api';
      } catch (err) {
        state.notes.push(`http.setGlobalProxyFromEnv failed: ${err.message}`);
      }
    }
  }

  // No npm package: an Agent of the bundled undici, so the handler API is fetch's own.
  if (want('builtin')) {
    const Agent = current && current.constructor;
    if (typeof Agent === 'function' && typeof current.dispatch === 'function' && /Agent$/.test(Agent.name)) {
      try {
        installBundled(new Agent({ connect: tunnellingConnector(proxies, noProxy) }));
        return `builtin (bundled undici ${process.versions.undici} ${Agent.name} + CONNECT connector)`;
      } catch (err) {
        state.notes.push(`builtin agent failed: ${err.message}`);
      }
    } else {
      state.notes.push(`no bundled undici Agent found (${currentName})`);
    }
  }

  // An npm undici (only reached when forced, or when the bundled Agent could not be used).
  if (want('undici')) {
    const found = loadUndici(state);
    if (found) {
      try {
        const agent = quietly(() => new found.undici.EnvHttpProxyAgent());
        const before = globalThis[FETCH_KEY];
        found.undici.setGlobalDispatcher(agent);
        if (globalThis[FETCH_KEY] === before) {
          state.notes.push(`undici ${found.version} did not set the global dispatcher this Node's fetch reads`);
        } else {
          return `undici ${found.version} (${found.from})`;
        }
      } catch (err) {
        state.notes.push(`undici ${found.version} EnvHttpProxyAgent failed: ${err.message}`);
      }
    }
  }
  return 'off';
}

// Node 24's EnvHttpProxyAgent prints an "experimental" warning once; agentprobe should not add
// noise to the agent's stderr, so that one warning is swallowed while we construct ours.
function quietly(fn) {
  const original = process.emitWarning;
  process.emitWarning = function (warning, ...rest) {
    const text = String(warning && warning.message || warning);
    const code = rest.find((x) => typeof x === 'string' && x.startsWith('UNDICI-')) ||
      (rest[0] && typeof rest[0] === 'object' && rest[0].code) || '';
    if (/EnvHttpProxyAgent is experimental/.test(text) || code === 'UNDICI-EHPA') return;
    return original.call(this, warning, ...rest);
  };
  try {
    return fn();
  } finally {
    process.emitWarning = original;
  }
}

function loadUndici(state) {
  const path = require('path');
  const fs = require('fs');
  const candidates = [];
  if (process.env.AGENTPROBE_UNDICI) {
    const p = process.env.AGENTPROBE_UNDICI;
    candidates.push({ dir: path.join(p, 'node_modules', 'undici'), from: 'agentprobe cache' });
    candidates.push({ dir: p, from: 'AGENTPROBE_UNDICI' });
  }
  // The agent's own dependency: resolved from the working directory and from the main script,
  // as the agent's `require('undici')` would be.
  const bases = [process.cwd()];
  if (process.argv[1]) bases.push(path.dirname(path.resolve(process.argv[1])));
  for (const base of bases) {
    try {
      const pkg = require.resolve('undici/package.json', { paths: [base] });
      candidates.push({ dir: path.dirname(pkg), from: `agent's node_modules` });
    } catch (_) { /* not there */ }
  }
  const seen = new Set();
  for (const c of candidates) {
    let meta;
    try {
      meta = JSON.parse(fs.readFileSync(path.join(c.dir, 'package.json'), 'utf8'));
    } catch (_) {
      continue;
    }
    if (meta.name !== 'undici' || seen.has(c.dir)) continue;
    seen.add(c.dir);
    const engine = meta.engines && meta.engines.node;
    if (engine && !satisfiesMinimum(process.versions.node, engine)) {
      state.notes.push(`skipped undici ${meta.version} from ${c.from}: needs node ${engine}`);
      continue;
    }
    try {
      const undici = require(c.dir);
      if (typeof undici.EnvHttpProxyAgent !== 'function' || typeof undici.setGlobalDispatcher !== 'function') {
        state.notes.push(`skipped undici ${meta.version} from ${c.from}: no EnvHttpProxyAgent`);
        continue;
      }
      return { undici, version: meta.version, from: c.from };
    } catch (err) {
      state.notes.push(`skipped undici ${meta.version} from ${c.from}: ${String(err.message).split('\n')[0]}`);
    }
  }
  return null;
}

// Only the ">=X.Y.Z" form (what undici's engines field uses); anything else is assumed to fit and
// the require() in a try decides.
function satisfiesMinimum(version, range) {
  const m = /^\s*>=\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*$/.exec(range);
  if (!m) return true;
  const have = version.split('.').map(Number);
  const need = [Number(m[1]), Number(m[2] || 0), Number(m[3] || 0)];
  for (let i = 0; i < 3; i++) {
    if (have[i] !== need[i]) return have[i] > need[i];
  }
  return true;
}

// A connector for the bundled undici Agent: (opts, callback) -> callback(err, socket).
function tunnellingConnector(proxies, noProxy) {
  const net = require('net');
  const tls = require('tls');
  return function connect(opts, callback) {
    const secure = opts.protocol === 'https:';
    const host = stripBrackets(opts.hostname);
    const port = Number(opts.port) || (secure ? 443 : 80);
    const servername = opts.servername || (net.isIP(host) ? undefined : host);
    const upgrade = (raw) => {
      if (!secure) return callback(null, raw);
      // `host` too: tls.connect over a given socket checks the certificate against it (else 'localhost').
      const socket = tls.connect({ socket: raw, host, servername, ALPNProtocols: ['http/1.1'] });
      socket.once('secureConnect', () => { socket.removeListener('error', fail); callback(null, socket); });
      const fail = (err) => { socket.destroy(); callback(err); };
      socket.once('error', fail);
    };
    if (bypass(noProxy, host, port)) {
      const raw = net.connect({ host, port });
      const fail = (err) => callback(err);
      raw.once('error', fail);
      raw.once('connect', () => { raw.removeListener('error', fail); upgrade(raw); });
      return;
    }
    openTunnel(proxies[secure ? 'https:' : 'http:'], host, port, (err, raw) => (err ? callback(err) : upgrade(raw)));
  };
}

// ---------------------------------------------------------------------------------- core http(s)

function setUpCore(state, proxies, noProxy) {
  const http = require('http');
  const https = require('https');
  // Agents that Node proxies itself (NODE_USE_ENV_PROXY / setGlobalProxyFromEnv: the two global
  // agents) keep Node's code; every other agent, e.g. `new https.Agent({keepAlive: true})` in an
  // SDK, which Node's env-proxy support leaves alone, gets the tunnel.
  const proxiedByNode = (agent) => Object.getOwnPropertySymbols(agent).some((s) => s.description === 'kProxyConfig' && agent[s]);

  const tls = require('tls');
  const originalHttp = http.Agent.prototype.createConnection;
  const originalHttps = https.Agent.prototype.createConnection;

  // Node's Agent#createSocket calls createConnection(options, oncreate) and takes a returned
  // socket at once, or waits for oncreate(err, socket) when nothing is returned: the tunnel is
  // asynchronous, so it returns nothing.
  http.Agent.prototype.createConnection = function (options, oncreate) {
    if (this instanceof https.Agent || typeof oncreate !== 'function' || !options || typeof options !== 'object' || proxiedByNode(this)) {
      return originalHttp.apply(this, arguments);
    }
    const host = stripBrackets(options.host || options.hostname || 'localhost');
    const port = Number(options.port) || 80;
    if (options.socketPath || bypass(noProxy, host, port)) return originalHttp.apply(this, arguments);
    openTunnel(proxies['http:'], host, port, oncreate);
    return undefined;
  };

  https.Agent.prototype.createConnection = function (options, oncreate) {
    if (typeof oncreate !== 'function' || !options || typeof options !== 'object' || proxiedByNode(this)) {
      return originalHttps.apply(this, arguments);
    }
    const host = stripBrackets(options.host || options.hostname || 'localhost');
    const port = Number(options.port) || 443;
    if (options.socketPath || bypass(noProxy, host, port)) return originalHttps.apply(this, arguments);
    openTunnel(proxies['https:'], host, port, (err, raw) => {
      if (err) return oncreate(err);
      // The agent's TLS options (ca, rejectUnauthorized, servername, ALPN...) still apply;
      // only the transport underneath is the tunnel.
      const tlsOptions = { ...options, socket: raw };
      delete tlsOptions.port; delete tlsOptions.path;
      tlsOptions.host = host;  // what the certificate is checked against (the socket is already given)
      if (tlsOptions.servername === undefined && !require('net').isIP(host)) tlsOptions.servername = host;
      const socket = tls.connect(tlsOptions);
      const fail = (e) => { socket.destroy(); oncreate(e); };
      socket.once('error', fail);
      socket.once('secureConnect', () => { socket.removeListener('error', fail); oncreate(null, socket); });
    });
    return undefined;
  };
  return nativeCoreProxy() ? 'tunnel for agents Node does not proxy (global agents: Node)' : 'tunnel (http.Agent / https.Agent createConnection)';
}

// ---------------------------------------------------------------------------------- shared

// Node's own env-proxy support has configured the global agents (NODE_USE_ENV_PROXY=1 on 22.21+ / 24.5+).
function nativeCoreProxy() {
  const has = (agent) => !!agent && Object.getOwnPropertySymbols(agent).some((s) => s.description === 'kProxyConfig' && agent[s]);
  return has(require('https').globalAgent) || has(require('http').globalAgent);
}

function parseProxy(value) {
  const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`);
  if (url.protocol !== 'http:') throw new Error(`only http:// proxies are supported here, not ${url.protocol}`);
  const auth = url.username
    ? `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`
    : null;
  return { host: stripBrackets(url.hostname), port: Number(url.port) || 80, auth };
}

function parseNoProxy(value) {
  return value.split(/[\s,]+/).filter(Boolean).map((entry) => {
    entry = entry.toLowerCase();
    if (entry === '*') return { any: true };
    let port = 0;
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry);
    if (m) { entry = m[1]; port = Number(m[2] || 0); }
    entry = stripBrackets(entry).replace(/^\*?\./, '.');
    return { host: entry, port };
  });
}

function bypass(rules, host, port) {
  host = host.toLowerCase();
  for (const r of rules) {
    if (r.any) return true;
    if (r.port && r.port !== port) continue;
    if (r.host.startsWith('.') ? host.endsWith(r.host) || host === r.host.slice(1) : host === r.host || host.endsWith(`.${r.host}`)) {
      return true;
    }
  }
  return false;
}

function stripBrackets(host) {
  return host && host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

const CONNECT_TIMEOUT_MS = 30000;

// A raw TCP socket to host:port through the proxy's CONNECT, or an error.
function openTunnel(proxy, host, port, callback) {
  const net = require('net');
  const authority = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
  const socket = net.connect({ host: proxy.host, port: proxy.port });
  let head = Buffer.alloc(0);
  let settled = false;
  const settle = (err) => {
    if (settled) return;
    settled = true;
    socket.removeListener('data', onData);
    socket.removeListener('error', settle);
    socket.removeListener('end', onEnd);
    socket.setTimeout(0);
    if (err) {
      socket.destroy();
      callback(err);
    } else {
      callback(null, socket);
    }
  };
  const onEnd = () => settle(new Error(`proxy closed the connection before answering CONNECT ${authority}`));
  const onData = (chunk) => {
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) {
      if (head.length > 65536) settle(new Error('proxy CONNECT answer too long'));
      return;
    }
    const statusLine = head.subarray(0, head.indexOf('\r\n')).toString('latin1');
    const status = Number(statusLine.split(' ')[1]);
    if (status !== 200) {
      const err = new Error(`proxy refused CONNECT ${authority}: ${statusLine}`);
      err.code = 'ERR_PROXY_TUNNEL';
      return settle(err);
    }
    const rest = head.subarray(end + 4);
    if (rest.length) socket.unshift(rest);
    settle(null);
  };
  socket.setTimeout(CONNECT_TIMEOUT_MS, () => settle(new Error(`proxy CONNECT ${authority} timed out`)));
  socket.on('data', onData);
  socket.once('error', settle);
  socket.once('end', onEnd);
  socket.once('connect', () => {
    const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`];
    if (proxy.auth) lines.push(`Proxy-Authorization: ${proxy.auth}`);
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  });
}

function report(state) {
  const file = process.env.AGENTPROBE_NODE_REPORT;
  const line = JSON.stringify({ pid: process.pid, node: process.version, argv: process.argv.slice(1, 2), ...state });
  if (file) {
    try {
      require('fs').appendFileSync(file, `${line}\n`);
    } catch (_) { /* best effort */ }
  }
  if (process.env.AGENTPROBE_NODE_DEBUG) process.stderr.write(`[agentprobe] ${line}\n`);
  else if (state.fetch === 'off' && state.notes.length) process.stderr.write(`[agentprobe] fetch not proxied: ${state.notes.join('; ')}\n`);
}

// Last, so that every const above is initialised before install() runs.
if (!globalThis[KEY]) {
  globalThis[KEY] = { fetch: 'off', core: 'off', notes: [] };
  try {
    install(globalThis[KEY]);
  } catch (err) {
    globalThis[KEY].notes.push(`install failed: ${err && err.stack || err}`);
  }
  report(globalThis[KEY]);
}
