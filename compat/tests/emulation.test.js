'use strict';

// Bidirectional emulation: the official SDK over `sse` only and over `http_stream` only (the
// WebSocket endpoint disabled), with commands through /emulation: connect, subscribe, receive,
// publish, presence, history, and recovery after the stream is cut. Also the fallback from a
// WebSocket that cannot connect.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { EventSource } = require('eventsource');
const { startHerald, now } = require('../lib/herald');
const { ENCODINGS, Clients, subscribe, unique } = require('../lib/sdk');

const T = { timeout: 30000 };

let herald;
before(async () => {
  herald = await startHerald({
    env: {
      HERALD_WEBSOCKET_DISABLED: 'true',
      HERALD_SSE_ENABLED: 'true',
      HERALD_HTTP_STREAM_ENABLED: 'true',
    },
  });
});
after(async () => {
  if (herald) await herald.stop();
});

function token(user) {
  return herald.token({ sub: user, exp: now() + 3600 });
}

// The SDK takes the list of transports in place of the endpoint.
function endpoints(transport) {
  return [{ transport, endpoint: `${herald.httpUrl}/connection/${transport}` }];
}

function options() {
  return {
    emulationEndpoint: `${herald.httpUrl}/emulation`,
    eventsource: EventSource,
    fetch,
    readableStream: ReadableStream,
  };
}

// SSE carries JSON only; HTTP streaming runs with both SDK builds.
const CASES = [
  { transport: 'sse', encoding: ENCODINGS[0] },
  { transport: 'http_stream', encoding: ENCODINGS[0] },
  { transport: 'http_stream', encoding: ENCODINGS[1] },
];

for (const { transport, encoding } of CASES) {
  const { enc, dec } = encoding;

  describe(`emulation over ${transport} (${encoding.name})`, () => {
    const clients = new Clients(encoding);
    afterEach(() => clients.closeAll());

    it('connects, subscribes, receives, publishes, presence and history', T, async () => {
      const { c, connected } = await clients.connect(endpoints(transport), { token: token('e1'), ...options() });
      assert.equal(connected.transport, transport);
      const channel = unique('chat:emu');
      const { sub, rec: srec } = await subscribe(c, channel);
      await herald.api('publish', { channel, data: { from: 'api' } });
      const first = await srec.waitFor('publication');
      assert.deepEqual(dec(first.data), { from: 'api' });
      await sub.publish(enc({ from: 'client' }));
      const second = await srec.waitFor('publication', { from: 1 });
      assert.deepEqual(dec(second.data), { from: 'client' });
      const presence = await sub.presence();
      const entries = Object.values(presence.clients);
      assert.equal(entries.length, 1);
      assert.equal(entries[0].user, 'e1');
      const history = await sub.history({ limit: 10 });
      assert.deepEqual(history.publications.map((p) => dec(p.data)), [{ from: 'api' }, { from: 'client' }]);
    });

    it('recovers the publications missed while the stream was cut', T, async () => {
      const user = unique('e2');
      const { c, rec } = await clients.connect(endpoints(transport), { token: token(user), ...options() });
      const channel = unique('chat:emu-recover');
      const { rec: srec, ctx } = await subscribe(c, channel);
      assert.equal(ctx.recoverable, true);
      await herald.api('publish', { channel, data: { n: 1 } });
      await srec.waitFor('publication');
      // Cut the stream from the server side (reconnect advised), publish meanwhile.
      await herald.api('disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
      await rec.waitFor('connecting', { pred: (e) => e.code === 3011 });
      await herald.api('publish', { channel, data: { n: 2 } });
      await herald.api('publish', { channel, data: { n: 3 } });
      await rec.waitCount('connected', 2);
      const resub = await srec.waitFor('subscribed', { from: 1 });
      assert.equal(resub.recovered, true, JSON.stringify(resub));
      const pubs = await srec.waitCount('publication', 3);
      assert.deepEqual(pubs.map((p) => dec(p.data).n), [1, 2, 3]);
    });
  });
}

describe('transport fallback', () => {
  const clients = new Clients(ENCODINGS[0]);
  afterEach(() => clients.closeAll());

  it('falls back from a WebSocket endpoint that does not answer an upgrade to sse', T, async () => {
    const list = [
      { transport: 'websocket', endpoint: herald.url },
      { transport: 'sse', endpoint: `${herald.httpUrl}/connection/sse` },
    ];
    const { connected } = await clients.connect(list, { token: token('e3'), ...options() });
    assert.equal(connected.transport, 'sse');
  });
});
