'use strict';

// Protocol §3: server pings and client pongs. With a 1 s ping interval and a client that
// reconnects when no ping arrives within ping + 500 ms, a connection that stays up for several
// intervals proves the server pings on time (else the SDK reconnects with code 2 "no ping") and
// accepts the SDK's pongs (else the server closes with 3012 "no pong").

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startHerald, now } = require('../lib/herald');
const { ENCODINGS, Clients, subscribe, unique, sleep } = require('../lib/sdk');
const { tappedWebSocket } = require('../lib/wiretap');

const T = { timeout: 20000 };

let herald;
before(async () => {
  herald = await startHerald({
    env: { HERALD_CLIENT_PING_INTERVAL: '1s', HERALD_CLIENT_PONG_TIMEOUT: '500ms' },
  });
});
after(async () => {
  if (herald) await herald.stop();
});

for (const encoding of ENCODINGS) {
  const { dec } = encoding;

  describe(`ping/pong (${encoding.name})`, () => {
    const clients = new Clients(encoding);
    afterEach(() => clients.closeAll());

    it('16. pings and pongs keep an idle connection alive', T, async () => {
      const { WebSocket, tap } = tappedWebSocket(encoding.name);
      const { c, rec } = await clients.connect(herald.url, {
        websocket: WebSocket,
        token: herald.token({ sub: 'idle', exp: now() + 3600 }),
        maxServerPingDelay: 500,
      });
      const channel = unique('chat:idle');
      const s = await subscribe(c, channel);
      await sleep(4000);
      assert.deepEqual(tap.errors, []);
      // First ping after 0.5-1 s, then every second.
      assert.ok(tap.pings() >= 3, `server pings seen: ${tap.pings()}`);
      assert.ok(tap.pongs() >= 3, `client pongs sent: ${tap.pongs()} (connect result must say pong: true)`);
      assert.ok(tap.pongs() <= tap.pings(), 'one pong per ping at most');
      assert.equal(c.state, 'connected');
      assert.equal(rec.count('connected'), 1, `reconnected: ${rec.describe()}`);
      assert.equal(rec.count('connecting'), 1, `went back to connecting: ${rec.describe()}`);
      assert.equal(rec.count('disconnected'), 0);
      await herald.api('publish', { channel, data: { alive: true } });
      const pub = await s.rec.waitFor('publication');
      assert.deepEqual(dec(pub.data), { alive: true });
    });
  });
}
