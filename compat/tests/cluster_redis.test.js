'use strict';

// Three Herald nodes over one redis-server (started here on a free loopback port): the official
// SDK on nodes B and C receives in order what is published through node A, the disconnect API
// on A closes a user connected to C, and a Redis restart while publishing costs the SDK nothing
// (the nodes make it resubscribe and recover from history).

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { startHerald, now, DEFAULT_NAMESPACES } = require('../lib/herald');
const { ENCODINGS, Clients, subscribe, unique, sleep } = require('../lib/sdk');

const T = { timeout: 60000 };
const encoding = ENCODINGS[0];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => (port === 6379 ? freePort().then(resolve, reject) : resolve(port)));
    });
  });
}

async function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => resolve(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { s.destroy(); resolve(d.toString().startsWith('+PONG')); });
  });
}

let redis;
async function startRedis(port, dir) {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir], { stdio: 'ignore' });
  for (let i = 0; i < 250 && !(await redisPing(port)); i++) await sleep(20);
  return child;
}
async function stopRedis(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.on('exit', r));
  child.kill('SIGKILL');
  await gone;
}

const nodes = [];
let redisPort;
let redisDir;
before(async () => {
  redisPort = await freePort();
  redisDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-compat-redis-'));
  redis = await startRedis(redisPort, redisDir);
  const prefix = unique('compat');
  for (const name of ['a', 'b', 'c']) {
    nodes.push(await startHerald({
      namespaces: DEFAULT_NAMESPACES.map((ns) => ({ ...ns, history_size: 1000 })),
      env: {
        HERALD_ENGINE_TYPE: 'redis',
        HERALD_ENGINE_REDIS_ADDRESS: `redis://127.0.0.1:${redisPort}`,
        HERALD_ENGINE_REDIS_PREFIX: prefix,
        HERALD_ENGINE_REDIS_IO_TIMEOUT: '1s',
        HERALD_NODE_NAME: name,
      },
    }));
  }
});
after(async () => {
  for (const n of nodes) await n.stop();
  await stopRedis(redis);
  if (redisDir) fs.rmSync(redisDir, { recursive: true, force: true });
});

function token(node, user) {
  return node.token({ sub: user, exp: now() + 3600 });
}

describe('cluster over redis (centrifuge-js)', () => {
  const clients = new Clients(encoding);
  afterEach(() => clients.closeAll());

  it('publish on A reaches subscribers on B and C in order; info lists three nodes', T, async () => {
    const [a, b, c] = nodes;
    const channel = unique('chat:cluster');
    const subs = [];
    for (const node of [b, c]) {
      const { c: client } = await clients.connect(node.url, { token: token(node, unique('u')) });
      subs.push(await subscribe(client, channel));
    }
    for (let n = 1; n <= 20; n++) await a.api('publish', { channel, data: { n } });
    for (const s of subs) {
      const pubs = await s.rec.waitCount('publication', 20, { timeout: 10000 });
      assert.deepEqual(pubs.map((p) => p.data.n), Array.from({ length: 20 }, (_, i) => i + 1));
      assert.deepEqual(pubs.map((p) => p.offset), Array.from({ length: 20 }, (_, i) => i + 1));
    }
    let names = [];
    for (let i = 0; i < 100 && names.length < 3; i++) {
      names = (await b.api('info', {})).nodes.map((n) => n.name).sort();
      if (names.length < 3) await sleep(100);
    }
    assert.deepEqual(names, ['a', 'b', 'c']);
  });

  it('the disconnect API on A closes a user connected to C', T, async () => {
    const [a, , c] = nodes;
    const user = unique('kicked');
    const { c: client, rec } = await clients.connect(c.url, { token: token(c, user) });
    await a.api('disconnect', { user });
    const d = await rec.waitFor('disconnected', { timeout: 10000 });
    assert.equal(d.code, 3503);
    assert.equal(client.state, 'disconnected');
  });

  it('a redis-server restart while publishing: the SDK ends with every publication once, in order', T, async () => {
    const [a, b] = nodes;
    const channel = unique('chat:restart');
    const { c: client } = await clients.connect(b.url, { token: token(b, unique('u')) });
    const s = await subscribe(client, channel);
    let accepted = 0;
    let refused = 0;
    let restarted = false;
    let killed = false;
    const deadline = Date.now() + 40000;
    while (accepted < 60 && Date.now() < deadline) {
      try {
        await a.api('publish', { channel, data: { n: accepted + 1 } });
        accepted += 1;
      } catch (_) {
        refused += 1;
      }
      if (accepted === 20 && !killed) {
        await stopRedis(redis);
        killed = true;
      }
      if (killed && !restarted && refused >= 5) {
        redis = await startRedis(redisPort, redisDir);
        restarted = true;
      }
      await sleep(20);
    }
    assert.ok(restarted && accepted === 60, `accepted ${accepted}, refused ${refused}`);
    const pubs = await s.rec.waitCount('publication', 60, { timeout: 20000 });
    await sleep(300);
    assert.equal(s.rec.count('publication'), 60, 'no duplicates');
    assert.deepEqual(pubs.map((p) => p.data.n), Array.from({ length: 60 }, (_, i) => i + 1));
  });
});
