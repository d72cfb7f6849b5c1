'use strict';

// Scenarios 7, 8 and 12: connection token refresh, expired token at connect, private channels
// with subscription tokens.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startHerald, now } = require('../lib/herald');
const { ENCODINGS, Clients, recordSub, subscribe, unique, sleep } = require('../lib/sdk');

const T = { timeout: 20000 };

let herald;
before(async () => {
  // Short grace periods: a connection whose token is not refreshed in time is closed with
  // 3005 one second after it expires; a subscription gets unsubscribe 2501 likewise.
  herald = await startHerald({
    env: { HERALD_CLIENT_EXPIRED_CLOSE_DELAY: '1s', HERALD_CLIENT_EXPIRED_SUB_CLOSE_DELAY: '1s' },
  });
});
after(async () => {
  if (herald) await herald.stop();
});

for (const encoding of ENCODINGS) {
  const { dec } = encoding;

  describe(`tokens (${encoding.name})`, () => {
    const clients = new Clients(encoding);
    afterEach(() => clients.closeAll());

    it('7. connection token refresh keeps the connection alive (no 3005)', T, async () => {
      const user = 'refresher';
      const calls = [];
      const getToken = async (ctx) => {
        calls.push({ at: Date.now(), ctx });
        return herald.token({ sub: user, exp: now() + 2 });
      };
      const started = Date.now();
      const { c, rec } = await clients.connect(herald.url, {
        token: herald.token({ sub: user, exp: now() + 2 }),
        getToken,
      });
      const channel = unique('chat:refresh');
      const s = await subscribe(c, channel);

      await sleep(5500);
      assert.ok(calls.length >= 2, `getToken was called to refresh the connection token (calls: ${calls.length})`);
      assert.ok(calls[0].at - started >= 500, 'the first refresh happens after the ttl, not at connect');
      assert.equal(c.state, 'connected');
      assert.equal(rec.count('connected'), 1, `reconnected: ${rec.describe()}`);
      assert.equal(rec.count('disconnected'), 0, `disconnected: ${rec.describe()}`);
      assert.equal(rec.count('connecting'), 1, `went back to connecting: ${rec.describe()}`);
      assert.equal(rec.count('error'), 0, `errors: ${rec.describe()}`);

      // Still delivering on the same connection.
      await herald.api('publish', { channel, data: { after: 'refresh' } });
      const pub = await s.rec.waitFor('publication');
      assert.deepEqual(dec(pub.data), { after: 'refresh' });
      assert.equal(s.rec.count('subscribed'), 1, 'no resubscribe happened');
    });

    it('7b. control: without a refresh the server closes the expired connection with 3005', T, async () => {
      const user = 'no-refresher';
      const started = Date.now();
      // getToken never answers: the SDK asks for a new token when the ttl is over but never
      // sends a refresh, so the server must close the connection once the token expired plus
      // expired_close_delay (1s). This shows scenario 7 really exercises the expiry path.
      // (Without any getToken the SDK would give up by itself with "unauthorized" instead.)
      let asked = 0;
      const { rec } = await clients.connect(herald.url, {
        token: herald.token({ sub: user, exp: now() + 2 }),
        getToken: () => { asked += 1; return new Promise(() => {}); },
      });
      const closed = await rec.waitFor('connecting', { pred: (ctx) => ctx.code === 3005, timeout: 8000 });
      assert.equal(closed.code, 3005);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 1000, `closed too early (${elapsed} ms)`);
      assert.ok(asked >= 1, 'the SDK tried to refresh');
    });

    it('8. an already expired token gets 109, the SDK calls getToken and connects', T, async () => {
      const user = 'late';
      let calls = 0;
      const getToken = async () => {
        calls += 1;
        return herald.token({ sub: user, exp: now() + 3600 });
      };
      const { c, rec } = clients.create(herald.url, {
        token: herald.token({ sub: user, exp: now() - 60 }),
        getToken,
      });
      c.connect();
      const err = await rec.waitFor('error');
      assert.equal(err.type, 'connect');
      assert.equal(err.error.code, 109, `expected connect error 109, got ${JSON.stringify(err.error)}`);
      const connected = await rec.waitFor('connected');
      assert.ok(connected.client);
      assert.ok(calls >= 1, 'getToken was called after error 109');
      assert.equal(c.state, 'connected');
      assert.equal(rec.count('disconnected'), 0, `disconnected: ${rec.describe()}`);
    });

    it('12a. private channel with a subscription token from getToken subscribes', T, async () => {
      const user = 'private-user';
      const { c } = await clients.connect(herald.url, { token: herald.token({ sub: user, exp: now() + 3600 }) });
      const channel = unique('$chat:secret');
      const asked = [];
      const chanInfo = { seat: 7 };
      const { rec: srec, ctx } = await subscribe(c, channel, {
        getToken: async (tctx) => {
          asked.push(tctx);
          return herald.token({ sub: user, channel: tctx.channel, exp: now() + 3600, info: chanInfo });
        },
      });
      assert.equal(ctx.channel, channel);
      assert.equal(asked.length, 1);
      assert.equal(asked[0].channel, channel);
      await herald.api('publish', { channel, data: { secret: true } });
      const pub = await srec.waitFor('publication');
      assert.deepEqual(dec(pub.data), { secret: true });

      // chan_info from the subscription token shows in presence.
      const presence = await c.presence(channel);
      const me = Object.values(presence.clients);
      assert.equal(me.length, 1);
      assert.equal(me[0].user, user);
      assert.deepEqual(dec(me[0].chanInfo), chanInfo);
    });

    it('12b. private channel without a token ends unsubscribed with code 103', T, async () => {
      const { c, rec } = await clients.connect(herald.url, { token: herald.token({ sub: 'nobody', exp: now() + 3600 }) });
      const channel = unique('$chat:secret');
      const sub = c.newSubscription(channel);
      const srec = recordSub(sub);
      sub.subscribe();
      const unsub = await srec.waitFor('unsubscribed');
      assert.equal(unsub.code, 103, `expected 103, got ${JSON.stringify(unsub)}`);
      assert.equal(srec.count('subscribed'), 0);
      assert.equal(sub.state, 'unsubscribed');
      assert.equal(c.state, 'connected', 'a permission error does not disconnect');
      assert.equal(rec.count('disconnected'), 0);
    });

    it('12c. subscription token refresh (sub_refresh) keeps the subscription alive', T, async () => {
      const user = 'sub-refresher';
      const { c, rec } = await clients.connect(herald.url, { token: herald.token({ sub: user, exp: now() + 3600 }) });
      const channel = unique('$chat:refresh');
      const calls = [];
      const { rec: srec } = await subscribe(c, channel, {
        getToken: async (tctx) => {
          calls.push(tctx);
          return herald.token({ sub: user, channel: tctx.channel, exp: now() + 2 });
        },
      });
      await sleep(5500);
      // One call for the initial subscribe, then at least two refreshes.
      assert.ok(calls.length >= 3, `getToken calls: ${calls.length}`);
      assert.ok(calls.every((x) => x.channel === channel));
      assert.equal(srec.count('subscribed'), 1, `resubscribed: ${srec.describe()}`);
      assert.equal(srec.count('subscribing'), 1, `went back to subscribing: ${srec.describe()}`);
      assert.equal(srec.count('unsubscribed'), 0);
      assert.equal(srec.count('error'), 0, `errors: ${srec.describe()}`);
      assert.equal(rec.count('connected'), 1);
      await herald.api('publish', { channel, data: { still: 'subscribed' } });
      const pub = await srec.waitFor('publication');
      assert.deepEqual(dec(pub.data), { still: 'subscribed' });
    });

    it('12d. control: an unrefreshed subscription gets unsubscribe 2501 and resubscribes', T, async () => {
      const user = 'sub-no-refresher';
      const { c } = await clients.connect(herald.url, { token: herald.token({ sub: user, exp: now() + 3600 }) });
      const channel = unique('$chat:norefresh');
      let calls = 0;
      const { rec: srec } = await subscribe(c, channel, {
        getToken: (tctx) => {
          calls += 1;
          if (calls === 1) return Promise.resolve(herald.token({ sub: user, channel: tctx.channel, exp: now() + 2 }));
          return new Promise(() => {}); // never answers: no sub_refresh is sent
        },
      });
      const again = await srec.waitFor('subscribing', { from: 1, timeout: 8000 });
      assert.equal(again.code, 2501, `expected 2501, got ${JSON.stringify(again)}`);
    });

    it('12e. a subscription token for another channel is rejected (Centrifugo: disconnect 3500)', T, async () => {
      const user = 'wrong-channel';
      const { c, rec } = await clients.connect(herald.url, { token: herald.token({ sub: user, exp: now() + 3600 }) });
      const channel = unique('$chat:target');
      const sub = c.newSubscription(channel, {
        getToken: async () => herald.token({ sub: user, channel: `${channel}-other`, exp: now() + 3600 }),
      });
      const srec = recordSub(sub);
      sub.subscribe();
      const d = await rec.waitFor('disconnected');
      assert.equal(d.code, 3500, `expected disconnect 3500, got ${JSON.stringify(d)}`);
      assert.equal(srec.count('subscribed'), 0);
    });
  });
}
