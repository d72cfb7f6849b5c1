// Connects to Herald with the official centrifuge-js SDK, subscribes to a channel and prints
// every publication. Usage: node subscribe.js <token> [channel] [url]
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');

const [token, channel = 'news', url = 'ws://127.0.0.1:8000/connection/websocket'] = process.argv.slice(2);
if (!token) {
  console.error('usage: node subscribe.js <token> [channel] [url]');
  process.exit(2);
}

const client = new Centrifuge(url, { token, websocket: WebSocket });
client.on('connected', (ctx) => console.log(`connected as client ${ctx.client}`));
client.on('disconnected', (ctx) => console.log(`disconnected: ${ctx.code} ${ctx.reason}`));

const sub = client.newSubscription(channel);
sub.on('subscribed', (ctx) => console.log(`subscribed to ${channel} (recovered: ${ctx.recovered})`));
sub.on('publication', (ctx) => console.log(`publication at offset ${ctx.offset}:`, JSON.stringify(ctx.data)));
sub.on('error', (ctx) => console.log('subscription error:', ctx.error));
sub.subscribe();
client.connect();
