'use strict';

// A `ws` WebSocket subclass that records every frame in both directions, so a test can check
// what went over the wire (pings, pongs) next to what the SDK reported.

const WebSocket = require('ws');

/** Splits a frame into messages: JSON lines, or varint-delimited Protobuf messages. */
function splitFrame(encoding, data) {
  if (encoding === 'json') {
    return Buffer.from(data).toString('utf8').split('\n').filter((l) => l.trim() !== '');
  }
  const buf = Buffer.from(data);
  const out = [];
  let pos = 0;
  while (pos < buf.length) {
    let len = 0;
    let shift = 0;
    for (;;) {
      if (pos >= buf.length) throw new Error(`truncated varint in frame ${buf.toString('hex')}`);
      const b = buf[pos++];
      len += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if ((b & 0x80) === 0) break;
    }
    if (pos + len > buf.length) throw new Error(`truncated message in frame ${buf.toString('hex')}`);
    out.push(buf.subarray(pos, pos + len));
    pos += len;
  }
  return out;
}

/** An empty message: a ping (server to client) or a pong (client to server). */
function isEmptyMessage(encoding, msg) {
  return encoding === 'json' ? msg.trim() === '{}' : msg.length === 0;
}

/** Returns { WebSocket, tap } where tap.in / tap.out list the messages seen. */
function tappedWebSocket(encoding) {
  const tap = { in: [], out: [], errors: [] };
  class TappedWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on('message', (data) => {
        try {
          for (const m of splitFrame(encoding, data)) tap.in.push({ at: Date.now(), m });
        } catch (e) {
          tap.errors.push(e);
        }
      });
    }

    send(data, ...rest) {
      try {
        for (const m of splitFrame(encoding, data)) tap.out.push({ at: Date.now(), m });
      } catch (e) {
        tap.errors.push(e);
      }
      return super.send(data, ...rest);
    }
  }
  tap.pings = () => tap.in.filter((x) => isEmptyMessage(encoding, x.m)).length;
  tap.pongs = () => tap.out.filter((x) => isEmptyMessage(encoding, x.m)).length;
  return { WebSocket: TappedWebSocket, tap };
}

module.exports = { tappedWebSocket, splitFrame };
