// Connects to Herald with the official centrifuge-js SDK, subscribes to a channel and prints
// every publication. Usage: node subscribe.js <token> [channel] [url]
//
// It saves the position (offset and epoch) of the last publication it printed to a file, and a
// restarted subscriber passes that position to the SDK (`since`), so the server sends what was
// published while it was down. Recovery inside one running process needs none of this; across
// restarts the SDK has nothing to resume from unless the application keeps the position.
// The file is `<channel>.position.json` next to this script, or $POSITION_FILE.
const fs = require('fs');
const path = require('path');
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');

const [token, channel = 'news', url = 'ws://127.0.0.1:8000/connection/websocket'] = process.argv.slice(2);
if (!token) {
  console.error('usage: node subscribe.js <token> [channel] [url]');
  process.exit(2);
}

const positionFile =
  process.env.POSITION_FILE || path.join(__dirname, `${encodeURIComponent(channel)}.position.json`);

function loadPosition() {
  let text;
  try {
    text = fs.readFileSync(positionFile, 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT') return null;
    throw err;
  }
  const pos = JSON.parse(text);
  if (!Number.isSafeInteger(pos.offset) || typeof pos.epoch !== 'string') {
    throw new Error(`${positionFile}: expected {"offset": <integer>, "epoch": "<string>"}, got ${text}`);
  }
  return pos;
}

// Written after each publication is handled, so a restart never skips one that was not printed.
function savePosition(pos) {
  fs.writeFileSync(positionFile, JSON.stringify(pos));
}

const since = loadPosition();
if (since) console.log(`resuming ${channel} after offset ${since.offset} (epoch ${since.epoch})`);
let epoch = since ? since.epoch : '';

const client = new Centrifuge(url, { token, websocket: WebSocket });
client.on('connected', (ctx) => console.log(`connected as client ${ctx.client}`));
client.on('disconnected', (ctx) => console.log(`disconnected: ${ctx.code} ${ctx.reason}`));

const sub = client.newSubscription(channel, since ? { since } : {});
sub.on('subscribed', (ctx) => {
  console.log(`subscribed to ${channel} (recovered: ${ctx.recovered})`);
  const pos = ctx.streamPosition;
  // Not recovered (a first start, or a restarted server with a new epoch): the stream starts
  // afresh at the server's current position. Recovered: the missed publications follow this
  // event and move the saved offset forward one by one.
  if (pos && !ctx.recovered) {
    epoch = pos.epoch;
    savePosition({ offset: pos.offset, epoch });
  }
});
sub.on('publication', (ctx) => {
  console.log(`publication at offset ${ctx.offset}:`, JSON.stringify(ctx.data));
  if (ctx.offset !== undefined && epoch) savePosition({ offset: ctx.offset, epoch });
});
sub.on('error', (ctx) => console.log('subscription error:', ctx.error));
sub.subscribe();
client.connect();
