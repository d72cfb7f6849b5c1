'use strict';

// The two builds of the official SDK (JSON and Protobuf), payload helpers and event recording
// with timeouts, so a failing scenario reports what it waited for instead of hanging.

const WebSocket = require('ws');
const jsonBuild = require('centrifuge');
const protobufBuild = require('centrifuge/build/protobuf');

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/**
 * Both encodings. `enc` turns an application value into what `publish`/`rpc` take, `dec` turns
 * a received `data` (publication data, connInfo, ...) back into the JSON value. With Protobuf
 * the SDK carries payloads as raw bytes, so the JSON text is encoded/decoded here.
 */
const ENCODINGS = [
  {
    name: 'json',
    Centrifuge: jsonBuild.Centrifuge,
    enc: (value) => value,
    dec: (data) => data,
  },
  {
    name: 'protobuf',
    Centrifuge: protobufBuild.Centrifuge,
    enc: (value) => textEncoder.encode(JSON.stringify(value)),
    dec: (data) => {
      if (!(data instanceof Uint8Array)) {
        throw new Error(`protobuf payload is not a Uint8Array: ${typeof data} ${JSON.stringify(data)}`);
      }
      return JSON.parse(textDecoder.decode(data));
    },
  },
];

const EVENTS_CLIENT = ['state', 'connecting', 'connected', 'disconnected', 'error', 'publication', 'join', 'leave', 'subscribed', 'subscribing', 'unsubscribed'];
const EVENTS_SUB = ['state', 'subscribing', 'subscribed', 'unsubscribed', 'error', 'publication', 'join', 'leave'];

/** Records every event of an emitter; `waitFor` looks at past and future events. */
class Recorder {
  constructor(emitter, names, label) {
    this.label = label;
    this.events = {};
    this.log = [];
    this.waiters = [];
    for (const name of names) {
      this.events[name] = [];
      emitter.on(name, (ctx) => {
        this.events[name].push(ctx);
        this.log.push({ name, ctx, at: Date.now() });
        for (const w of [...this.waiters]) w.check();
      });
    }
  }

  all(name) {
    return this.events[name];
  }

  count(name) {
    return this.events[name].length;
  }

  /** Resolves with the first event `name` (at index >= from) matching `pred`. */
  waitFor(name, { pred = () => true, timeout = 5000, from = 0 } = {}) {
    return this._wait(`event "${name}"`, timeout, () => {
      const list = this.events[name];
      for (let i = from; i < list.length; i++) {
        if (pred(list[i])) return { value: list[i] };
      }
      return null;
    });
  }

  /** Resolves with the list of events `name` once there are at least `n` (from `from`). */
  waitCount(name, n, { timeout = 5000, from = 0, pred = () => true } = {}) {
    return this._wait(`${n} "${name}" events`, timeout, () => {
      const list = this.events[name].slice(from).filter(pred);
      return list.length >= n ? { value: list } : null;
    });
  }

  _wait(what, timeout, test) {
    return new Promise((resolve, reject) => {
      const waiter = {
        check: () => {
          let r;
          try {
            r = test();
          } catch (e) {
            done();
            reject(e);
            return;
          }
          if (r) {
            done();
            resolve(r.value);
          }
        },
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.label}: timed out after ${timeout} ms waiting for ${what}; events so far: ${this.describe()}`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
      };
      this.waiters.push(waiter);
      waiter.check();
    });
  }

  describe() {
    return this.log
      .map(({ name, ctx }) => `${name}(${safeJson(ctx)})`)
      .join(', ')
      .slice(0, 3000);
  }
}

function safeJson(v) {
  try {
    return JSON.stringify(v, (k, x) => (x instanceof Uint8Array ? `bytes:${textDecoder.decode(x)}` : x));
  } catch (_) {
    return String(v);
  }
}

/**
 * Per-test client factory: creates SDK clients of one encoding, records their events and
 * disconnects them all in `closeAll()` (call it from afterEach).
 */
class Clients {
  constructor(encoding) {
    this.encoding = encoding;
    this.list = [];
  }

  /** New client (not yet connected). Returns { c, rec }. */
  create(url, options = {}, label = `client${this.list.length + 1}`) {
    const c = new this.encoding.Centrifuge(url, {
      websocket: WebSocket,
      timeout: 5000,
      minReconnectDelay: 100,
      maxReconnectDelay: 2000,
      ...options,
    });
    const rec = new Recorder(c, EVENTS_CLIENT, `${this.encoding.name} ${label}`);
    this.list.push(c);
    return { c, rec };
  }

  /** New client, connected. */
  async connect(url, options = {}, label) {
    const r = this.create(url, options, label);
    r.c.connect();
    r.connected = await r.rec.waitFor('connected');
    return r;
  }

  closeAll() {
    for (const c of this.list) {
      try {
        c.disconnect();
      } catch (_) {
        // ignore
      }
      try {
        // Drop every listener so late events after the test cannot fire assertions.
        c.removeAllListeners();
      } catch (_) {
        // ignore
      }
    }
    this.list = [];
  }
}

/** Records a Subscription's events. */
function recordSub(sub, label) {
  return new Recorder(sub, EVENTS_SUB, label || `sub ${sub.channel}`);
}

/** Creates a client-side subscription, subscribes and waits for `subscribed`. */
async function subscribe(client, channel, options = {}, label) {
  const sub = client.newSubscription(channel, options);
  const rec = recordSub(sub, label);
  sub.subscribe();
  const ctx = await rec.waitFor('subscribed');
  return { sub, rec, ctx };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects after `ms` with a message naming what did not happen. */
function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

let uniq = 0;
/** Unique channel suffix, so scenarios sharing a server never see each other's data. */
function unique(prefix) {
  uniq += 1;
  return `${prefix}-${process.pid}-${uniq}-${Math.random().toString(36).slice(2, 8)}`;
}

module.exports = { ENCODINGS, Recorder, Clients, recordSub, subscribe, sleep, withTimeout, unique, WebSocket };
