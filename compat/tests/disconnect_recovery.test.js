'use strict';

// Scenarios 9-11: server-side disconnect through the API, forced reconnect with recovery, and
// a reconnect whose gap is too large to recover.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startHerald, now } = require('../lib/herald');
const { ENCODINGS, Clients, subscribe, unique, sleep } = require('../lib/sdk');

const T = { timeout: 20000 };

let herald;
before(async () => {
  herald = await startHerald();
});
after(async () => {
  if (herald) await herald.stop();
});

function token(user) {
  return herald.token({ sub: user, exp: now() + 3600 });
}

// Reconnect no sooner than 1.5 s after a disconnect (full jitter: 1.5-3 s for the first
// attempt), so publications made through the API right after the disconnect are missed.
const SLOW_RECONNECT = { minReconnectDelay: 1500, maxReconnectDelay: 3000 };

for (const encoding of ENCODINGS) {
  const { dec } = encoding;

  describe(`disconnect and recovery (${encoding.name})`, () => {
    const clients = new Clients(encoding);
    afterEach(() => clients.closeAll());

    it('9. API disconnect {user} ends the client with 3503 and no reconnect', T, async () => {
      const user = unique('kicked');
      const { c, rec } = await clients.connect(herald.url, { token: token(user) });
      const other = await clients.connect(herald.url, { token: token(unique('bystander')) }, 'bystander');
      await herald.api('disconnect', { user });
      const d = await rec.waitFor('disconnected');
      assert.equal(d.code, 3503, `expected 3503, got ${JSON.stringify(d)}`);
      assert.equal(d.reason, 'force disconnect');
      await sleep(1000);
      assert.equal(c.state, 'disconnected');
      assert.equal(rec.count('connecting'), 1, `must not reconnect: ${rec.describe()}`);
      assert.equal(rec.count('connected'), 1);
      // Other users are untouched.
      assert.equal(other.c.state, 'connected');
      assert.equal(other.rec.count('disconnected'), 0);
    });

    for (const [code, reason] of [[3011, 'force reconnect'], [4000, 'app reconnect']]) it(`10. forced reconnect (${code}) recovers the publications missed meanwhile`, T, async () => {
      const user = unique('reconnecter');
      const { c, rec } = await clients.connect(herald.url, { token: token(user), ...SLOW_RECONNECT });
      const channel = unique('chat:recover');
      const s = await subscribe(c, channel);
      assert.equal(s.ctx.recoverable, true, 'force_recovery namespace: recoverable');
      assert.equal(s.ctx.positioned, true);
      assert.equal(s.ctx.wasRecovering, false);
      assert.ok(s.ctx.streamPosition && typeof s.ctx.streamPosition.epoch === 'string');

      const first = await herald.api('publish', { channel, data: { n: 1 } });
      await s.rec.waitFor('publication');

      await herald.api('disconnect', { user, disconnect: { code, reason } });
      const connecting = await rec.waitFor('connecting', { from: 1 });
      assert.equal(connecting.code, code);
      assert.equal(connecting.reason, reason);
      await s.rec.waitFor('subscribing', { from: 1 });

      const missed = [];
      missed.push(await herald.api('publish', { channel, data: { n: 2 } }));
      missed.push(await herald.api('publish', { channel, data: { n: 3 } }));
      assert.equal(c.state, 'connecting', 'the publications were made while the client was away');

      const resub = await s.rec.waitFor('subscribed', { from: 1, timeout: 8000 });
      assert.equal(resub.wasRecovering, true, `wasRecovering: ${JSON.stringify(resub)}`);
      assert.equal(resub.recovered, true, `recovered: ${JSON.stringify(resub)}`);
      assert.equal(resub.hasRecoveredPublications, true);
      assert.equal(resub.streamPosition.epoch, first.epoch);
      // Go's subscribeCmd answers a successful recovery with the client's own offset; the
      // recovered publications then move it forward.
      assert.equal(resub.streamPosition.offset, first.offset, 'recovered: offset is the position the client sent');

      const pubs = await s.rec.waitCount('publication', 3);
      await sleep(200);
      assert.equal(s.rec.count('publication'), 3, 'no duplicates');
      assert.deepEqual(pubs.map((p) => dec(p.data)), [{ n: 1 }, { n: 2 }, { n: 3 }]);
      assert.deepEqual(pubs.map((p) => p.offset), [first.offset, missed[0].offset, missed[1].offset]);
      assert.deepEqual(pubs.map((p) => p.offset), [first.offset, first.offset + 1, first.offset + 2]);
      // The recovered publications come right after the second subscribed event.
      const names = s.rec.log.map((e) => e.name).filter((n) => n === 'subscribed' || n === 'publication');
      assert.deepEqual(names, ['subscribed', 'publication', 'subscribed', 'publication', 'publication']);
      assert.equal(rec.count('connected'), 2);
      assert.equal(rec.count('disconnected'), 0);

      // Live delivery continues after the recovery.
      const live = await herald.api('publish', { channel, data: { n: 4 } });
      const p4 = await s.rec.waitFor('publication', { from: 3 });
      assert.deepEqual(dec(p4.data), { n: 4 });
      assert.equal(p4.offset, live.offset);
    });

    it('11. a gap larger than the history is not recovered (recovered: false)', T, async () => {
      const user = unique('lossy');
      const { c, rec } = await clients.connect(herald.url, { token: token(user), ...SLOW_RECONNECT });
      const channel = unique('small:lossy'); // history_size 2
      const s = await subscribe(c, channel);
      assert.equal(s.ctx.recoverable, true);
      const first = await herald.api('publish', { channel, data: { n: 1 } });
      await s.rec.waitFor('publication');

      await herald.api('disconnect', { user, disconnect: { code: 3011, reason: 'force reconnect' } });
      await rec.waitFor('connecting', { from: 1 });
      let top;
      for (let n = 2; n <= 6; n++) top = await herald.api('publish', { channel, data: { n } });
      assert.equal(c.state, 'connecting', 'the publications were made while the client was away');

      const resub = await s.rec.waitFor('subscribed', { from: 1, timeout: 8000 });
      assert.equal(resub.wasRecovering, true, `wasRecovering: ${JSON.stringify(resub)}`);
      assert.equal(resub.recovered, false, `recovered: ${JSON.stringify(resub)}`);
      assert.equal(resub.hasRecoveredPublications, false);
      assert.equal(resub.streamPosition.offset, top.offset, 'position moves to the stream top');
      assert.equal(resub.streamPosition.epoch, first.epoch);
      await sleep(300);
      assert.equal(s.rec.count('publication'), 1, `no partial recovery: ${s.rec.describe()}`);

      // The client continues from the top.
      const live = await herald.api('publish', { channel, data: { n: 7 } });
      const p = await s.rec.waitFor('publication', { from: 1 });
      assert.deepEqual(dec(p.data), { n: 7 });
      assert.equal(p.offset, live.offset);
    });

    it('11b. a server restart changes the epoch: recovery fails (recovered: false)', T, async () => {
      // A dedicated server, restarted in place on the same port: the memory engine's streams
      // come back with a new epoch.
      const env = { HERALD_SHUTDOWN_CLIENT_CLOSE_WINDOW: '100ms' };
      let first = await startHerald({ env });
      let second = null;
      try {
        const user = unique('restart');
        const { c, rec } = await clients.connect(first.url, {
          token: first.token({ sub: user, exp: now() + 3600 }),
          minReconnectDelay: 500,
          maxReconnectDelay: 1000,
        });
        const channel = unique('chat:restart');
        const s = await subscribe(c, channel);
        const before = await first.api('publish', { channel, data: { n: 1 } });
        await s.rec.waitFor('publication');

        await first.stop();
        const away = await rec.waitFor('connecting', { from: 1 });
        assert.equal(away.code, 3001, `shutdown closes with 3001: ${JSON.stringify(away)}`);
        second = await startHerald({ env, port: first.port });

        const resub = await s.rec.waitFor('subscribed', { from: 1, timeout: 10000 });
        assert.equal(resub.wasRecovering, true, JSON.stringify(resub));
        assert.equal(resub.recovered, false, JSON.stringify(resub));
        assert.notEqual(resub.streamPosition.epoch, before.epoch, 'new epoch after the restart');
        const live = await second.api('publish', { channel, data: { n: 2 } });
        const p = await s.rec.waitFor('publication', { from: 1 });
        assert.deepEqual(dec(p.data), { n: 2 });
        assert.equal(p.offset, live.offset);
      } finally {
        clients.closeAll();
        await first.stop();
        if (second) await second.stop();
      }
    });
  });
}
