'use strict';

// Scenarios 14 and 15: server-side subscriptions, from the token `channels` claim and from the
// server API `subscribe` method. Their events arrive on the client object, not on a
// Subscription.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startHerald, now } = require('../lib/herald');
const { ENCODINGS, Clients, unique, sleep } = require('../lib/sdk');

const T = { timeout: 20000 };

let herald;
before(async () => {
  herald = await startHerald();
});
after(async () => {
  if (herald) await herald.stop();
});

for (const encoding of ENCODINGS) {
  const { dec } = encoding;

  describe(`server-side subscriptions (${encoding.name})`, () => {
    const clients = new Clients(encoding);
    afterEach(() => clients.closeAll());

    it('14. channels claim: subscribed at connect, publications on the client-level event', T, async () => {
      const user = unique('srv');
      const ch1 = unique('chat:srv-a');
      const ch2 = unique('chat:srv-b');
      const { c, rec } = await clients.connect(herald.url, {
        token: herald.token({ sub: user, exp: now() + 3600, channels: [ch1, ch2] }),
      });
      const subs = await rec.waitCount('subscribed', 2);
      assert.deepEqual(subs.map((s) => s.channel).sort(), [ch1, ch2].sort());
      // chat has force_recovery: the server-side sub is recoverable and positioned.
      const s1 = subs.find((s) => s.channel === ch1);
      assert.equal(s1.recoverable, true, JSON.stringify(s1));
      assert.equal(s1.positioned, true);
      assert.equal(s1.wasRecovering, false);

      const res = await herald.api('publish', { channel: ch1, data: { via: 'token channels' } });
      await herald.api('publish', { channel: ch2, data: { via: 'second channel' } });
      const pubs = await rec.waitCount('publication', 2);
      const p1 = pubs.find((p) => p.channel === ch1);
      assert.ok(p1, `publication for ${ch1}: ${rec.describe()}`);
      assert.deepEqual(dec(p1.data), { via: 'token channels' });
      assert.equal(p1.offset, res.offset);
      assert.deepEqual(dec(pubs.find((p) => p.channel === ch2).data), { via: 'second channel' });
      assert.equal(c.state, 'connected');

      // The server knows about the subscription.
      const stats = await herald.api('presence_stats', { channel: ch1 });
      assert.equal(stats.num_clients, 1);
    });

    it('14b. server-side subscription recovers missed publications after a forced reconnect', T, async () => {
      const user = unique('srv-recover');
      const channel = unique('chat:srv-recover');
      const { c, rec } = await clients.connect(herald.url, {
        token: herald.token({ sub: user, exp: now() + 3600, channels: [channel] }),
        minReconnectDelay: 1500,
        maxReconnectDelay: 3000,
      });
      await rec.waitFor('subscribed');
      const first = await herald.api('publish', { channel, data: { n: 1 } });
      await rec.waitFor('publication');

      await herald.api('disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
      await rec.waitFor('connecting', { from: 1 });
      await herald.api('publish', { channel, data: { n: 2 } });
      await herald.api('publish', { channel, data: { n: 3 } });
      assert.equal(c.state, 'connecting');

      const resub = await rec.waitFor('subscribed', { from: 1, timeout: 8000 });
      assert.equal(resub.channel, channel);
      assert.equal(resub.wasRecovering, true, JSON.stringify(resub));
      assert.equal(resub.recovered, true, JSON.stringify(resub));
      const pubs = await rec.waitCount('publication', 3);
      await sleep(200);
      assert.equal(rec.count('publication'), 3, 'no duplicates');
      assert.deepEqual(pubs.map((p) => dec(p.data)), [{ n: 1 }, { n: 2 }, { n: 3 }]);
      assert.deepEqual(pubs.map((p) => p.offset), [first.offset, first.offset + 1, first.offset + 2]);
      assert.equal(rec.count('unsubscribed'), 0);
    });

    it('15. API subscribe of a connected user: client-level subscribed, then publications', T, async () => {
      const user = unique('apisub');
      const { c, rec } = await clients.connect(herald.url, { token: herald.token({ sub: user, exp: now() + 3600 }) });
      const channel = unique('chat:api-subscribed');
      assert.equal(rec.count('subscribed'), 0);
      await herald.api('subscribe', { user, channel });
      const sub = await rec.waitFor('subscribed');
      assert.equal(sub.channel, channel);

      const res = await herald.api('publish', { channel, data: { hello: 'server-side' } });
      const pub = await rec.waitFor('publication');
      assert.equal(pub.channel, channel);
      assert.deepEqual(dec(pub.data), { hello: 'server-side' });
      assert.equal(pub.offset, res.offset);

      // And the API unsubscribe ends it with a client-level unsubscribed event.
      await herald.api('unsubscribe', { user, channel });
      const unsub = await rec.waitFor('unsubscribed');
      assert.equal(unsub.channel, channel);
      await herald.api('publish', { channel, data: { after: 'unsubscribe' } });
      await sleep(200);
      assert.equal(rec.count('publication'), 1, 'nothing delivered after the unsubscribe');
      assert.equal(c.state, 'connected');
    });
  });
}
