'use strict';

// Cluster scenarios over NATS: three Herald nodes and one nats-server -js. Publications through
// node A reach centrifuge-js subscribers on B and C in order; presence and history through the
// SDK see the whole cluster; a client whose node is killed recovers on the node that takes its
// address.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { startHerald, now } = require('../lib/herald');
const { startNats } = require('../lib/nats');
const { ENCODINGS, Clients, subscribe, unique } = require('../lib/sdk');

const T = { timeout: 30000 };

let nats;
let nodes = [];
let env;
before(async () => {
  nats = await startNats();
  env = {
    HERALD_BROKER_ENABLED: 'true',
    HERALD_BROKER_TYPE: 'nats',
    HERALD_BROKER_NATS_URL: nats.url,
    HERALD_BROKER_NATS_PREFIX: unique('compat').replace(/[^A-Za-z0-9_-]/g, '_'),
  };
  nodes = [await startHerald({ env }), await startHerald({ env }), await startHerald({ env })];
});
after(async () => {
  for (const n of nodes) await n.stop();
  if (nats) await nats.stop();
});

function token(node, user) {
  return node.token({ sub: user, exp: now() + 3600 });
}

for (const encoding of ENCODINGS) {
  const { dec } = encoding;

  describe(`cluster over NATS (${encoding.name})`, () => {
    const clients = new Clients(encoding);
    afterEach(() => clients.closeAll());

    it('publications through A reach subscribers on B and C in order; presence and history see both', T, async () => {
      const [a, b, c] = nodes;
      const channel = unique('chat:cluster');
      const onB = await clients.connect(b.url, { token: token(b, 'ub') }, 'on B');
      const onC = await clients.connect(c.url, { token: token(c, 'uc') }, 'on C');
      const subB = await subscribe(onB.c, channel);
      const subC = await subscribe(onC.c, channel);
      const offsets = [];
      for (let n = 1; n <= 20; n++) {
        offsets.push((await a.api('publish', { channel, data: { n } })).offset);
      }
      for (const s of [subB, subC]) {
        const pubs = await s.rec.waitCount('publication', 20);
        assert.deepEqual(pubs.map((p) => dec(p.data).n), [...Array(20).keys()].map((i) => i + 1));
        assert.deepEqual(pubs.map((p) => p.offset), offsets);
      }
      const presence = await subB.sub.presence();
      const users = Object.values(presence.clients).map((i) => i.user).sort();
      assert.deepEqual(users, ['ub', 'uc']);
      const history = await subC.sub.history({ limit: 5, since: { offset: 15, epoch: subC.ctx.streamPosition.epoch } });
      assert.deepEqual(history.publications.map((p) => dec(p.data).n), [16, 17, 18, 19, 20]);
    });

    it('a client of a killed node recovers on the node that takes its address', T, async () => {
      const [a, , c] = nodes;
      const user = unique('moving');
      const { c: client } = await clients.connect(c.url, {
        token: token(c, user),
        minReconnectDelay: 500,
        maxReconnectDelay: 1000,
      });
      const channel = unique('chat:failover');
      const s = await subscribe(client, channel);
      await a.api('publish', { channel, data: { n: 1 } });
      await s.rec.waitFor('publication');

      // Kill C (no goodbye) and publish while the client has no node.
      process.kill(c.pid, 'SIGKILL');
      await s.rec.waitFor('subscribing', { from: 1 });
      for (let n = 2; n <= 4; n++) await a.api('publish', { channel, data: { n } });
      const replacement = await startHerald({ env, port: c.port });
      nodes[2] = replacement;

      const resub = await s.rec.waitFor('subscribed', { from: 1, timeout: 10000 });
      assert.equal(resub.wasRecovering, true, JSON.stringify(resub));
      assert.equal(resub.recovered, true, JSON.stringify(resub));
      const pubs = await s.rec.waitCount('publication', 4);
      assert.deepEqual(pubs.map((p) => dec(p.data).n), [1, 2, 3, 4]);
      await a.api('publish', { channel, data: { n: 5 } });
      const live = await s.rec.waitFor('publication', { from: 4 });
      assert.deepEqual(dec(live.data), { n: 5 });
    });
  });
}
