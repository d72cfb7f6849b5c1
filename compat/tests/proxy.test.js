'use strict';

// The logic-layer proxies with the official SDK: centrifuge-js connects WITHOUT a token through
// the connect proxy (with custom data and emulated headers), subscribes and publishes through
// the subscribe and publish proxies and calls an RPC method answered by the RPC proxy. The
// backend is a node:http server in this test process, on its own loopback port.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { startHerald } = require('../lib/herald');
const { ENCODINGS, Clients, recordSub, subscribe, unique } = require('../lib/sdk');

const T = { timeout: 20000 };

const received = [];

// The payload of a request, JSON or base64 (binary encoding), as a JS value.
function payloadOf(body) {
  if (body.data !== undefined) return body.data;
  if (body.b64data !== undefined) return JSON.parse(Buffer.from(body.b64data, 'base64').toString('utf8'));
  return undefined;
}

function answer(req, body) {
  const data = payloadOf(body);
  switch (req.url) {
    case '/connect':
      return { result: { user: data && data.user, data: { welcome: data && data.user }, info: { via: 'proxy' } } };
    case '/subscribe':
      if (body.channel.includes('deny')) return { error: { code: 1403, message: 'not your room' } };
      return { result: { data: { room: body.channel } } };
    case '/publish':
      return { result: { data: { stamped: true, original: data } } };
    case '/rpc':
      return { result: { data: { method: body.method, user: body.user, asked: data } } };
    default:
      return { error: { code: 1404, message: 'no such endpoint' } };
  }
}

let backend;
let herald;
before(async () => {
  backend = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { raw += c; });
    req.on('end', () => {
      const body = JSON.parse(raw);
      received.push({ path: req.url, headers: req.headers, body });
      const out = JSON.stringify(answer(req, body));
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
      res.end(out);
    });
  });
  await new Promise((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${backend.address().port}`;
  herald = await startHerald({
    namespaces: [{ name: 'px', subscribe_proxy_enabled: true, publish_proxy_enabled: true }],
    config: {
      client: { proxy: { connect: { enabled: true, endpoint: `${base}/connect`, emulated_headers: ['X-App-Version'] } } },
      channel: { proxy: { subscribe: { endpoint: `${base}/subscribe` }, publish: { endpoint: `${base}/publish` } } },
      rpc: { proxy: { endpoint: `${base}/rpc` }, without_namespace: { proxy_enabled: true } },
    },
  });
});
after(async () => {
  if (herald) await herald.stop();
  if (backend) await new Promise((resolve) => backend.close(resolve));
});

for (const encoding of ENCODINGS) {
  const { enc, dec } = encoding;

  describe(`proxies (${encoding.name})`, () => {
    const clients = new Clients(encoding);
    afterEach(() => clients.closeAll());

    it('connects without a token through the connect proxy', T, async () => {
      const user = unique('js-user');
      const { connected } = await clients.connect(herald.url, {
        data: enc({ user }),
        headers: { 'X-App-Version': '7.1' },
      });
      assert.deepEqual(dec(connected.data), { welcome: user });
      const req = received.filter((r) => r.path === '/connect').find((r) => payloadOf(r.body).user === user);
      assert.ok(req, 'the backend saw the connect');
      assert.equal(req.body.client, connected.client);
      assert.equal(req.body.transport, 'websocket');
      assert.equal(req.body.protocol, encoding.name === 'json' ? 'json' : 'protobuf');
      assert.equal(req.body.encoding, encoding.name === 'json' ? 'json' : 'binary');
      assert.equal(req.body.name, 'js');
      assert.equal(req.headers['x-app-version'], '7.1', 'emulated header forwarded');
      assert.match(req.headers.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/);
    });

    it('subscribes and publishes through the proxies, and calls RPC', T, async () => {
      const user = unique('js-pub');
      const { c } = await clients.connect(herald.url, { data: enc({ user }) });
      const channel = unique('px:room');
      const { rec, ctx } = await subscribe(c, channel);
      assert.deepEqual(dec(ctx.data), { room: channel });
      await c.publish(channel, enc({ text: 'hi' }));
      const pub = await rec.waitFor('publication');
      assert.deepEqual(dec(pub.data), { stamped: true, original: { text: 'hi' } });
      assert.equal(pub.info.user, user);

      const rpc = await c.rpc('getProfile', enc({ id: 1 }));
      assert.deepEqual(dec(rpc.data), { method: 'getProfile', user, asked: { id: 1 } });
    });

    it('a subscription the backend denies ends with its error code', T, async () => {
      const { c } = await clients.connect(herald.url, { data: enc({ user: unique('js-deny') }) });
      const sub = c.newSubscription(unique('px:deny'));
      const rec = recordSub(sub);
      sub.subscribe();
      // A permanent error ends the subscription with the backend's code and message.
      const ctx = await rec.waitFor('unsubscribed');
      assert.equal(ctx.code, 1403, rec.describe());
      assert.equal(ctx.reason, 'not your room');
    });
  });
}
