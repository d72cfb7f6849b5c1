'use strict';

// Scenarios 1-6 and 13: connect, subscribe, publish, presence, history, RPC, join/leave.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startHerald, now } = require('../lib/herald');
const { ENCODINGS, Clients, recordSub, subscribe, unique, sleep } = require('../lib/sdk');

const T = { timeout: 20000 };

let herald;
before(async () => {
  herald = await startHerald();
});
after(async () => {
  if (herald) await herald.stop();
});

function token(user, extra = {}) {
  return herald.token({ sub: user, exp: now() + 3600, ...extra });
}

for (const encoding of ENCODINGS) {
  const { enc, dec } = encoding;

  describe(`basic (${encoding.name})`, () => {
    const clients = new Clients(encoding);
    afterEach(() => clients.closeAll());

    it('1. connects with a JWT: connected event, client id, websocket transport', T, async () => {
      const { c, rec, connected } = await clients.connect(herald.url, { token: token('u1') });
      assert.equal(typeof connected.client, 'string');
      assert.ok(connected.client.length > 0, 'client id must be non-empty');
      assert.equal(connected.transport, 'websocket');
      assert.equal(c.state, 'connected');
      assert.equal(rec.count('disconnected'), 0);
      assert.equal(rec.count('error'), 0, `unexpected errors: ${rec.describe()}`);
    });

    it('2. subscribes to a namespaced channel and receives a server API publication', T, async () => {
      const { c } = await clients.connect(herald.url, { token: token('u2') });
      const channel = unique('chat:api-pub');
      const { rec: srec, ctx } = await subscribe(c, channel);
      assert.equal(ctx.channel, channel);
      const payload = { text: 'hello from the API', n: 1, nested: { list: [1, 2, 3], ok: true } };
      const res = await herald.api('publish', { channel, data: payload });
      const pub = await srec.waitFor('publication');
      assert.equal(pub.channel, channel);
      assert.deepEqual(dec(pub.data), payload);
      // The channel keeps history: the publication carries the offset the API answered.
      assert.equal(typeof res.offset, 'number');
      assert.equal(pub.offset, res.offset);
      assert.equal(pub.info, undefined, 'API publications carry no publisher info');
    });

    it('2b. subscriptions created before connect go out with the connect command and work', T, async () => {
      const { c, rec } = clients.create(herald.url, { token: token('u2b') });
      const channel = unique('chat:early');
      const sub = c.newSubscription(channel);
      const srec = recordSub(sub);
      sub.subscribe();
      c.connect();
      await rec.waitFor('connected');
      await srec.waitFor('subscribed');
      await herald.api('publish', { channel, data: { early: true } });
      const pub = await srec.waitFor('publication');
      assert.deepEqual(dec(pub.data), { early: true });
    });

    it('2c. a payload with raw newlines (pretty-printed JSON in the API body) arrives intact', T, async () => {
      const { c, rec } = await clients.connect(herald.url, { token: token('u2c') });
      const channel = unique('chat:newlines');
      const { rec: srec } = await subscribe(c, channel);
      const payload = { text: 'line1\nline2', list: [1, 2], nested: { a: 'b' } };
      // Raw JSON with newlines between tokens: the server must strip them before embedding the
      // payload in a JSON frame, where a newline separates replies.
      const body = `{\n  "channel": ${JSON.stringify(channel)},\n  "data": ${JSON.stringify(payload, null, 2)}\n}`;
      const res = await fetch(`${herald.httpUrl}/api/publish`, {
        method: 'POST',
        headers: { 'X-API-Key': herald.apiKey, 'Content-Type': 'application/json' },
        body,
      });
      assert.equal(res.status, 200);
      assert.ok((await res.json()).result, 'API publish succeeded');
      const pub = await srec.waitFor('publication');
      assert.deepEqual(dec(pub.data), payload);
      await sleep(100);
      assert.equal(c.state, 'connected');
      assert.equal(rec.count('disconnected'), 0);
      assert.equal(rec.count('connecting'), 1, `reconnected: ${rec.describe()}`);
    });

    it('3. publishes from the client; another client and the publisher itself receive it', T, async () => {
      const a = await clients.connect(herald.url, { token: token('alice') }, 'alice');
      const b = await clients.connect(herald.url, { token: token('bob') }, 'bob');
      const channel = unique('chat:client-pub');
      const sa = await subscribe(a.c, channel);
      const sb = await subscribe(b.c, channel);
      const payload = { text: 'hi from alice', at: 12345 };
      const result = await sa.sub.publish(enc(payload));
      assert.ok(result && typeof result === 'object', 'publish resolves with a result object');
      for (const [who, s] of [['bob', sb], ['alice (self)', sa]]) {
        const pub = await s.rec.waitFor('publication');
        assert.deepEqual(dec(pub.data), payload, `${who} got the payload`);
        assert.ok(pub.info, `${who}: publication must carry the publisher's ClientInfo`);
        assert.equal(pub.info.user, 'alice');
        assert.equal(pub.info.client, a.connected.client);
        assert.ok(pub.offset > 0, `${who}: offset in a channel with history`);
      }
      // Exactly one copy each.
      await sleep(200);
      assert.equal(sa.rec.count('publication'), 1);
      assert.equal(sb.rec.count('publication'), 1);

      // allow_publish_for_subscriber only: publishing into a channel one is not subscribed to
      // is refused with 103.
      await assert.rejects(b.c.publish(unique('chat:not-subscribed'), enc({ x: 1 })), (err) => {
        assert.equal(err.code, 103, `expected 103, got ${JSON.stringify(err)}`);
        return true;
      });
      assert.equal(b.c.state, 'connected');
    });

    it('4. presence and presenceStats list the subscribers with user ids and connInfo', T, async () => {
      const info = { name: 'Alice', role: 'admin' };
      const a = await clients.connect(herald.url, { token: token('alice', { info }) }, 'alice');
      const b = await clients.connect(herald.url, { token: token('bob') }, 'bob');
      const a2 = await clients.connect(herald.url, { token: token('alice', { info }) }, 'alice#2');
      const channel = unique('chat:presence');
      const sa = await subscribe(a.c, channel);
      await subscribe(b.c, channel);
      await subscribe(a2.c, channel);

      const presence = await sa.sub.presence();
      const clientsMap = presence.clients;
      assert.ok(clientsMap && typeof clientsMap === 'object', 'presence().clients is a map');
      assert.deepEqual(
        Object.keys(clientsMap).sort(),
        [a.connected.client, b.connected.client, a2.connected.client].sort(),
      );
      const ca = clientsMap[a.connected.client];
      assert.equal(ca.user, 'alice');
      assert.equal(ca.client, a.connected.client);
      assert.deepEqual(dec(ca.connInfo), info, 'connInfo comes from the token info claim');
      const cb = clientsMap[b.connected.client];
      assert.equal(cb.user, 'bob');
      assert.equal(cb.client, b.connected.client);
      // No info claim, no conn_info on the wire. (The Protobuf build's decoder yields an empty
      // Uint8Array default for an absent bytes field; the JSON build leaves it undefined.)
      assert.ok(!Object.prototype.hasOwnProperty.call(cb, 'conn_info'), 'no conn_info field sent');
      assert.ok(cb.connInfo === undefined || (cb.connInfo instanceof Uint8Array && cb.connInfo.length === 0),
        `no info claim, no connInfo (got ${cb.connInfo})`);
      assert.equal(clientsMap[a2.connected.client].user, 'alice');

      // Same through the client-level method.
      const viaClient = await b.c.presence(channel);
      assert.equal(Object.keys(viaClient.clients).length, 3);

      const stats = await sa.sub.presenceStats();
      assert.deepEqual(stats, { numClients: 3, numUsers: 2 });
    });

    it('5. history returns publications in order with offsets; limit 0 returns only the position', T, async () => {
      const { c } = await clients.connect(herald.url, { token: token('u5') });
      const channel = unique('chat:history');
      const { sub, rec: srec } = await subscribe(c, channel);
      const payloads = [{ i: 1 }, { i: 2, s: 'two' }, { i: 3, arr: [3] }];
      const positions = [];
      for (const p of payloads) positions.push(await herald.api('publish', { channel, data: p }));
      await srec.waitCount('publication', 3);

      const h = await sub.history({ limit: 10 });
      assert.equal(h.publications.length, 3);
      assert.deepEqual(h.publications.map((p) => dec(p.data)), payloads);
      assert.deepEqual(h.publications.map((p) => p.offset), positions.map((p) => p.offset));
      for (let i = 1; i < 3; i++) {
        assert.equal(h.publications[i].offset, h.publications[i - 1].offset + 1, 'consecutive offsets');
      }
      assert.equal(h.offset, positions[2].offset, 'history offset is the stream top');
      assert.equal(typeof h.epoch, 'string');
      assert.ok(h.epoch.length > 0, 'non-empty epoch');
      assert.equal(h.epoch, positions[2].epoch);

      const top = await sub.history({ limit: 0 });
      assert.deepEqual(top.publications, []);
      assert.equal(top.offset, positions[2].offset);
      assert.equal(top.epoch, h.epoch);

      const last = await sub.history({ limit: 1, reverse: true });
      assert.equal(last.publications.length, 1);
      assert.deepEqual(dec(last.publications[0].data), payloads[2]);

      const since = await sub.history({ limit: 10, since: { offset: positions[0].offset, epoch: h.epoch } });
      assert.deepEqual(since.publications.map((p) => dec(p.data)), payloads.slice(1));

      await assert.rejects(sub.history({ limit: 10, since: { offset: 1, epoch: 'not-the-epoch' } }), (err) => {
        assert.equal(err.code, 112, `expected 112 unrecoverable position, got ${JSON.stringify(err)}`);
        return true;
      });
    });

    it('6. RPC without an RPC backend is rejected with error 104', T, async () => {
      const { c, rec } = await clients.connect(herald.url, { token: token('u6') });
      await assert.rejects(c.rpc('some.method', enc({ x: 1 })), (err) => {
        assert.equal(err.code, 104, `expected code 104, got ${JSON.stringify(err)}`);
        assert.equal(typeof err.message, 'string');
        return true;
      });
      // The connection survives the error.
      await sleep(100);
      assert.equal(c.state, 'connected');
      assert.equal(rec.count('disconnected'), 0);
    });

    it('13. join/leave: client A sees B join and leave', T, async () => {
      const a = await clients.connect(herald.url, { token: token('alice') }, 'alice');
      const bInfo = { name: 'Bob' };
      const b = await clients.connect(herald.url, { token: token('bob', { info: bInfo }) }, 'bob');
      const channel = unique('chat:joinleave');
      const sa = await subscribe(a.c, channel);
      const sb = await subscribe(b.c, channel);
      const isBob = (ctx) => ctx.info && ctx.info.client === b.connected.client;

      const join = await sa.rec.waitFor('join', { pred: isBob });
      assert.equal(join.channel, channel);
      assert.equal(join.info.user, 'bob');
      assert.deepEqual(dec(join.info.connInfo), bInfo);

      sb.sub.unsubscribe();
      const leave = await sa.rec.waitFor('leave', { pred: isBob });
      assert.equal(leave.channel, channel);
      assert.equal(leave.info.user, 'bob');
      assert.equal(leave.info.client, b.connected.client);
      assert.ok(sa.rec.log.findIndex((e) => e.name === 'join' && isBob(e.ctx))
        < sa.rec.log.findIndex((e) => e.name === 'leave' && isBob(e.ctx)), 'join before leave');
    });
  });
}
