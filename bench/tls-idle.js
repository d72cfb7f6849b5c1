'use strict';

// Idle memory per WebSocket, plain against TLS, in one run: starts a `herald` (HERALD_BIN,
// default target/release/herald) without and then with http_server.tls, opens N WebSocket
// clients that connect and subscribe, and reports the server's RSS growth per client. Loopback
// only; N and every wait are bounded.
//
//   node bench/tls-idle.js [N]        (needs `ws` from compat/node_modules and `openssl`)

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const WebSocket = require(path.join(__dirname, '..', 'compat', 'node_modules', 'ws'));

const N = Math.min(Number(process.argv[2] || 2000), 20000);
const BIN = process.env.HERALD_BIN || path.join(__dirname, '..', 'target', 'release', 'herald');
const SECRET = 'bench-secret';

function token(sub) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${head}.${crypto.createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

function certificates(dir) {
  const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=bench CA']);
  run(['req', ...ec, '-keyout', 'key.pem', '-out', 'leaf.csr', '-subj', '/CN=localhost']);
  fs.writeFileSync(path.join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1\n');
  run(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cert.pem',
    '-days', '1', '-extfile', 'ext']);
  return { ca: fs.readFileSync(path.join(dir, 'ca.pem')), cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
}

function start(env) {
  const child = spawn(BIN, ['--port', '0', '--address', '127.0.0.1'], {
    env: { PATH: process.env.PATH, NO_COLOR: '1', HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY: SECRET, HERALD_HTTP_API_KEY: 'k',
      HERALD_CHANNEL_WITHOUT_NAMESPACE_ALLOW_SUBSCRIBE_FOR_CLIENT: 'true', HERALD_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`no listening line: ${err}`)); }, 10000);
    child.stderr.on('data', (c) => {
      err += c;
      const m = err.match(/herald listening on 127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve({ child, port: Number(m[1]) }); }
    });
  });
}

const rss = (pid) => Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function open(url, options, i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('client timeout')); }, 20000);
    ws.on('open', () => {
      ws.send(JSON.stringify({ id: 1, connect: { token: token(`u${i}`) } }) + '\n' +
        JSON.stringify({ id: 2, subscribe: { channel: `room${i % 100}` } }));
    });
    ws.on('message', (data) => {
      for (const line of String(data).split('\n')) {
        if (line.includes('"id":2')) { clearTimeout(timer); resolve(ws); }
        if (line === '{}') ws.send('{}');
      }
    });
    ws.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

async function measure(label, env, scheme, options) {
  const { child, port } = await start(env);
  await sleep(500);
  const before = rss(child.pid);
  const clients = [];
  const url = `${scheme}://127.0.0.1:${port}/connection/websocket`;
  for (let i = 0; i < N; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(i + 100, N); j++) batch.push(open(url, options, j));
    clients.push(...await Promise.all(batch));
  }
  await sleep(3000);
  const after = rss(child.pid);
  const per = (after - before) / N;
  console.log(`${label}: ${N} idle subscribed WebSockets, RSS ${(before / 1048576).toFixed(1)} -> ${(after / 1048576).toFixed(1)} MiB, ${per.toFixed(0)} B per client`);
  for (const ws of clients) ws.terminate();
  child.kill('SIGTERM');
  await new Promise((r) => child.on('exit', r));
  return { port, per };
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-tls-bench-'));
  try {
    const c = certificates(dir);
    const plain = await measure('plain', {}, 'ws', {});
    const tls = await measure('tls', { HERALD_HTTP_SERVER_TLS_ENABLED: 'true', HERALD_HTTP_SERVER_TLS_CERT_PEM: c.cert,
      HERALD_HTTP_SERVER_TLS_KEY_PEM: c.key }, 'wss', { ca: c.ca });
    console.log(`TLS adds ${(tls.per - plain.per).toFixed(0)} B per idle WebSocket`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
})().catch((e) => { console.error(e); process.exit(1); });
