'use strict';
// Shared helpers for the amqplib client-compatibility suite.
// No sleeps: everything waits on an event/promise, with a timeout as safety net.
const amqp = require('amqplib');
const crypto = require('node:crypto');

const AMQP_URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2F';
const TIMEOUT = Number(process.env.AMQP_TEST_TIMEOUT || 10000);

function unique(prefix) {
  return `lepus-node-${prefix}-${crypto.randomBytes(5).toString('hex')}`;
}

function withTimeout(promise, what, ms = TIMEOUT) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// Collects items pushed by callbacks; waitFor(n) resolves once n have arrived.
class Collector {
  constructor() {
    this.items = [];
    this.waiters = [];
  }
  push(item) {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => {
      if (this.items.length >= w.n) { w.resolve(this.items.slice()); return false; }
      return true;
    });
  }
  waitFor(n, what = `${n} items`, ms = TIMEOUT) {
    if (this.items.length >= n) return Promise.resolve(this.items.slice());
    return withTimeout(new Promise((resolve) => this.waiters.push({ n, resolve })), what, ms);
  }
}

// Open connections for a test and close them afterwards.
async function connections(t, n = 1) {
  const conns = [];
  for (let i = 0; i < n; i++) {
    const c = await withTimeout(amqp.connect(AMQP_URL), 'connect');
    c.on('error', () => {}); // surfaced through assertions instead
    conns.push(c);
  }
  t.after(async () => {
    for (const c of conns) {
      try { await c.close(); } catch (_) { /* already closed */ }
    }
  });
  return conns;
}

// basic.get everything currently in a queue (noAck); returns message bodies as strings.
async function drain(ch, queue, limit = 1000) {
  const out = [];
  for (let i = 0; i < limit; i++) {
    const m = await ch.get(queue, { noAck: true });
    if (m === false) return out;
    out.push(m.content.toString());
  }
  throw new Error(`queue ${queue} did not drain`);
}

// Best-effort deletion of named queues/exchanges after a test.
function cleanup(t) {
  const items = [];
  t.after(async () => {
    if (!items.length) return;
    let c;
    try {
      c = await amqp.connect(AMQP_URL);
      c.on('error', () => {});
      for (const [kind, name] of items) {
        try {
          const ch = await c.createChannel();
          ch.on('error', () => {});
          if (kind === 'queue') await ch.deleteQueue(name); else await ch.deleteExchange(name);
          await ch.close();
        } catch (_) { /* ignore */ }
      }
    } catch (_) { /* ignore */ } finally {
      if (c) { try { await c.close(); } catch (_) { /* ignore */ } }
    }
  });
  return items;
}

function fib(n) {
  let a = 0, b = 1;
  for (let i = 0; i < n; i++) [a, b] = [b, a + b];
  return a;
}

module.exports = { amqp, AMQP_URL, TIMEOUT, unique, withTimeout, Collector, connections, drain, cleanup, fib };
