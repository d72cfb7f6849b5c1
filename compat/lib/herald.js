'use strict';

// Starting and stopping a Herald server for the compatibility tests, calling its server API,
// and signing HS256 tokens.

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const HERALD_BIN = process.env.HERALD_BIN
  ? path.resolve(process.env.HERALD_BIN)
  : path.resolve(__dirname, '..', '..', 'target', 'debug', 'herald');

const DEFAULT_SECRET = 'compat-hmac-secret-' + crypto.randomBytes(8).toString('hex');
const DEFAULT_API_KEY = 'compat-api-key-' + crypto.randomBytes(8).toString('hex');

// Namespaces most scenarios use.
//  - chat: everything on, recoverable, join/leave pushed to everyone.
//  - small: recoverable with a history of only 2 publications (unrecoverable gaps).
const DEFAULT_NAMESPACES = [
  {
    name: 'chat',
    presence: true,
    history_size: 10,
    history_ttl: '300s',
    force_recovery: true,
    allow_subscribe_for_client: true,
    allow_publish_for_subscriber: true,
    allow_presence_for_subscriber: true,
    allow_history_for_subscriber: true,
    join_leave: true,
    force_push_join_leave: true,
  },
  {
    name: 'small',
    history_size: 2,
    history_ttl: '300s',
    force_recovery: true,
    allow_subscribe_for_client: true,
    allow_history_for_subscriber: true,
  },
];

const LISTEN_TIMEOUT_MS = 10000;
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

const running = new Set();

// Last-resort cleanup if a test file forgets to stop its servers or crashes.
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch (_) {
      // already gone
    }
  }
});

/**
 * Starts Herald on 127.0.0.1 and an OS-chosen port.
 *
 * options:
 *  - env: extra HERALD_* variables (override the defaults below);
 *  - namespaces: value of HERALD_CHANNEL_NAMESPACES (default DEFAULT_NAMESPACES);
 *  - config: an object written to a temporary JSON file passed with --config;
 *  - secret, apiKey: HMAC secret and API key (defaults: random per test process);
 *  - port: a fixed port (default 0: chosen by the OS), e.g. to restart a server in place.
 *
 * Resolves to { url, port, httpUrl, secret, apiKey, api(method, body), token(claims),
 * stop(), stderr() }.
 */
async function startHerald(options = {}) {
  const secret = options.secret || DEFAULT_SECRET;
  const apiKey = options.apiKey || DEFAULT_API_KEY;
  if (!fs.existsSync(HERALD_BIN)) {
    throw new Error(`herald binary not found at ${HERALD_BIN} (build it with "cargo build -p herald-server" or set HERALD_BIN)`);
  }
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME || os.tmpdir(),
    NO_COLOR: '1',
    HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY: secret,
    HERALD_HTTP_API_KEY: apiKey,
    HERALD_CHANNEL_NAMESPACES: JSON.stringify(options.namespaces || DEFAULT_NAMESPACES),
    ...(options.env || {}),
  };
  const args = ['--port', String(options.port || 0), '--address', '127.0.0.1'];
  let configDir = null;
  if (options.config) {
    configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-compat-'));
    const file = path.join(configDir, 'config.json');
    fs.writeFileSync(file, JSON.stringify(options.config, null, 2));
    args.push('--config', file);
  }

  const child = spawn(HERALD_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stderr = '';
  let stdout = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk) => { stdout += chunk; });

  let exited = false;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = true;
      running.delete(child);
      if (configDir) fs.rmSync(configDir, { recursive: true, force: true });
      resolve({ code, signal });
    });
  });

  const port = await new Promise((resolve, reject) => {
    const fail = (msg) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${msg}\n--- herald stderr ---\n${stderr.replace(ANSI, '')}\n--- herald stdout ---\n${stdout}`));
    };
    const timer = setTimeout(() => fail(`herald did not report "herald listening on" within ${LISTEN_TIMEOUT_MS} ms`), LISTEN_TIMEOUT_MS);
    child.on('error', (err) => fail(`cannot start ${HERALD_BIN}: ${err.message}`));
    const onEarlyExit = (code, signal) => fail(`herald exited early (code ${code}, signal ${signal})`);
    child.on('exit', onEarlyExit);
    let listening = false;
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
      if (listening) return;
      const m = stderr.replace(ANSI, '').match(/herald listening on 127\.0\.0\.1:(\d+)/);
      if (m) {
        listening = true;
        clearTimeout(timer);
        child.off('exit', onEarlyExit);
        resolve(Number(m[1]));
      }
    });
  });

  const httpUrl = `http://127.0.0.1:${port}`;

  async function api(method, body = {}) {
    const res = await fetch(`${httpUrl}/api/${method}`, {
      method: 'POST',
      headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
    const text = await res.text();
    if (res.status !== 200) {
      throw new Error(`API ${method}: HTTP ${res.status}: ${text}`);
    }
    const json = JSON.parse(text);
    if (json.error) {
      const err = new Error(`API ${method}: error ${json.error.code} ${json.error.message}`);
      err.code = json.error.code;
      throw err;
    }
    return json.result;
  }

  async function stop() {
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 3000);
    await exitPromise;
    clearTimeout(timer);
  }

  return {
    port,
    url: `ws://127.0.0.1:${port}/connection/websocket`,
    httpUrl,
    secret,
    apiKey,
    api,
    stop,
    token: (claims) => signToken(claims, secret),
    stderr: () => stderr.replace(ANSI, ''),
    pid: child.pid,
  };
}

function b64url(input) {
  return Buffer.from(input).toString('base64url');
}

/** Signs an HS256 JWT with the given claims. */
function signToken(claims, secret = DEFAULT_SECRET) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(claims));
  const sig = crypto.createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

/** Current Unix time in seconds. */
function now() {
  return Math.floor(Date.now() / 1000);
}

module.exports = { startHerald, signToken, now, HERALD_BIN, DEFAULT_NAMESPACES };
