'use strict';

// Headless Chromium (Debian's `chromium`, driven through playwright-core) loads a page served
// by this test from another origin and uses the browser's own EventSource against uni_sse and
// fetch long-polling against uni_long_poll: publications arrive on both, a publication made
// while the EventSource is reconnecting arrives once (recovered through Last-Event-ID), and so
// do publications made while the long-poll client is between polls.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { startHerald, now } = require('../../compat/lib/herald');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PAGE = fs.readFileSync(path.join(__dirname, '..', 'page.html'));
const CHANNEL = 'chat:browser';

let pageServer;
let pageOrigin;
let herald;
let browser;

async function waitFor(page, what, predicate, arg, timeout = 15000) {
  try {
    await page.waitForFunction(predicate, arg, { timeout, polling: 50 });
  } catch (e) {
    const state = await page.evaluate(() => JSON.stringify(window.state));
    throw new Error(`${what}: ${e.message}\npage state: ${state}\n--- herald stderr ---\n${herald.stderr()}`);
  }
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

before(async () => {
  pageServer = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(PAGE);
  });
  await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
  pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;
  herald = await startHerald({
    env: {
      HERALD_UNI_SSE_ENABLED: 'true',
      HERALD_UNI_LONG_POLL_ENABLED: 'true',
      HERALD_UNI_LONG_POLL_POLL_TIMEOUT: '2s',
      HERALD_CLIENT_ALLOWED_ORIGINS: JSON.stringify([pageOrigin]),
    },
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});

after(async () => {
  if (browser) await browser.close();
  if (herald) await herald.stop();
  if (pageServer) await new Promise((resolve) => pageServer.close(resolve));
});

describe('browser', () => {
  it('receives over EventSource and long-polling, and loses nothing across reconnects', { timeout: 60000 }, async () => {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const token = herald.token({ sub: 'browser', exp: now() + 3600 });
    const query = new URLSearchParams({ herald: herald.httpUrl, token, channel: CHANNEL });
    await page.goto(`${pageOrigin}/?${query}`);
    await waitFor(page, 'both clients connected', () => window.state.sse.connects === 1 && window.state.lp.connected);

    for (const n of range(1, 3)) await herald.api('publish', { channel: CHANNEL, data: { n } });
    await waitFor(page, 'first publications', () =>
      window.state.sse.seen.length >= 3 && window.state.lp.seen.length >= 3);

    // Cut the EventSource: a server-side disconnect of that client ends its stream, and the
    // browser reconnects after its retry delay (about 3 s in Chromium) with Last-Event-ID.
    const client = await page.evaluate(() => window.state.sse.client);
    await herald.api('disconnect', { user: 'browser', client });
    await waitFor(page, 'the EventSource noticed the cut', () => window.state.sse.errors >= 1);
    // Published while the browser is reconnecting.
    for (const n of range(4, 6)) await herald.api('publish', { channel: CHANNEL, data: { n } });
    await waitFor(page, 'the EventSource reconnected', () => window.state.sse.connects === 2);
    await waitFor(page, 'recovered over SSE', () => window.state.sse.seen.length >= 6);
    await waitFor(page, 'long-poll unaffected', () => window.state.lp.seen.length >= 6);
    const state = await page.evaluate(() => window.state);
    assert.deepEqual(state.sse.seen, range(1, 6), 'SSE: each once, in order');
    assert.deepEqual(state.lp.seen, range(1, 6), 'long-poll: each once, in order');
    assert.equal(state.lp.error, null);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('long-polling keeps what is published between polls', { timeout: 60000 }, async () => {
    const page = await browser.newPage();
    const token = herald.token({ sub: 'poller', exp: now() + 3600 });
    const channel = 'chat:between';
    const query = new URLSearchParams({ herald: herald.httpUrl, token, channel });
    await page.goto(`${pageOrigin}/?${query}`);
    await waitFor(page, 'connected', () => window.state.lp.connected && window.state.sse.connects === 1);
    await herald.api('publish', { channel, data: { n: 1 } });
    await waitFor(page, 'first publication', () => window.state.lp.seen.length === 1);
    // Hold the next poll back (the page is "between polls") while publishing.
    await page.evaluate(() => { window.state.lp.paused = true; });
    await new Promise((r) => setTimeout(r, 2500)); // the held poll times out and is not renewed
    for (const n of range(2, 5)) await herald.api('publish', { channel, data: { n } });
    await page.evaluate(() => { window.state.lp.paused = false; });
    await waitFor(page, 'the publications made between polls', () => window.state.lp.seen.length >= 5);
    for (const n of range(6, 8)) await herald.api('publish', { channel, data: { n } });
    await waitFor(page, 'later publications', () => window.state.lp.seen.length >= 8);
    const state = await page.evaluate(() => window.state);
    assert.equal(state.lp.error, null);
    assert.deepEqual(state.lp.seen, range(1, 8), 'long-poll: each once, in order');
    assert.deepEqual(state.sse.seen, range(1, 8), 'SSE too');
    await page.close();
  });
});
