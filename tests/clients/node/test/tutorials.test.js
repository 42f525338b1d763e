'use strict';
// RabbitMQ tutorials 1-6 with amqplib's promise API, as in the official tutorials.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { unique, Collector, connections, drain, cleanup, fib } = require('./helpers');

const OPTS = { timeout: 30000 };

// --- Tutorial 1: "Hello World!" ---------------------------------------------
test('t1 hello world', OPTS, async (t) => {
  const [conn] = await connections(t);
  const items = cleanup(t);
  const ch = await conn.createChannel();
  const queue = unique('hello');
  items.push(['queue', queue]);
  const ok = await ch.assertQueue(queue, { durable: false });
  assert.equal(ok.queue, queue);
  assert.equal(ok.messageCount, 0);
  assert.equal(ok.consumerCount, 0);

  assert.equal(ch.sendToQueue(queue, Buffer.from('Hello World!')), true);

  const got = new Collector();
  const { consumerTag } = await ch.consume(queue, (msg) => got.push(msg), { noAck: true });
  const [msg] = await got.waitFor(1, 'hello world delivery');
  assert.equal(msg.content.toString(), 'Hello World!');
  assert.equal(msg.fields.exchange, '');
  assert.equal(msg.fields.routingKey, queue);
  assert.equal(msg.fields.redelivered, false);
  assert.equal(msg.fields.consumerTag, consumerTag);
  await ch.cancel(consumerTag);
  assert.equal((await ch.checkQueue(queue)).messageCount, 0);
});

// --- Tutorial 2: Work queues (prefetch fair dispatch) -------------------------
test('t2 work queues: prefetch(1) fair dispatch + redelivery on worker death', OPTS, async (t) => {
  const [producerConn, slowConn, fastConn] = await connections(t, 3);
  const items = cleanup(t);
  const queue = unique('task_queue');
  items.push(['queue', queue]);
  const producer = await producerConn.createChannel();
  await producer.assertQueue(queue, { durable: true });

  const slow = await slowConn.createChannel();
  const fast = await fastConn.createChannel();
  await slow.prefetch(1);
  await fast.prefetch(1);
  const slowGot = new Collector();
  const fastGot = new Collector();
  const all = new Collector();
  await slow.consume(queue, (msg) => { slowGot.push(msg); all.push(msg); }, { noAck: false });
  await fast.consume(queue, (msg) => {
    fastGot.push(msg); all.push(msg);
    fast.ack(msg);
  }, { noAck: false });

  const n = 10;
  for (let i = 0; i < n; i++) {
    producer.sendToQueue(queue, Buffer.from(`task ${i}`), { persistent: true });
  }
  await all.waitFor(n, 'all tasks dispatched');
  // Round-robin without prefetch would have given the busy worker n/2 tasks.
  assert.equal(slowGot.items.length, 1);
  assert.equal(fastGot.items.length, n - 1);
  const bodies = all.items.map((m) => m.content.toString()).sort();
  assert.deepEqual(bodies, Array.from({ length: n }, (_, i) => `task ${i}`).sort());

  const held = slowGot.items[0].content.toString();
  await slowConn.close(); // dies without acking
  const after = await fastGot.waitFor(n, 'redelivery after worker death');
  const last = after[n - 1];
  assert.equal(last.content.toString(), held);
  assert.equal(last.fields.redelivered, true);
});

// --- Tutorial 3: Publish/Subscribe --------------------------------------------
test('t3 fanout publish/subscribe with exclusive server-named queues', OPTS, async (t) => {
  const [c1, c2] = await connections(t, 2);
  const items = cleanup(t);
  const exchange = unique('logs');
  items.push(['exchange', exchange]);
  const pub = await c1.createChannel();
  await pub.assertExchange(exchange, 'fanout', { durable: false });
  pub.publish(exchange, '', Buffer.from('lost')); // nobody bound yet: dropped

  const subs = [];
  for (const c of [c1, c2]) {
    const ch = await c.createChannel();
    const q = await ch.assertQueue('', { exclusive: true });
    assert.match(q.queue, /^amq\.gen-/);
    await ch.bindQueue(q.queue, exchange, '');
    const got = new Collector();
    await ch.consume(q.queue, (m) => got.push(m.content.toString()), { noAck: true });
    subs.push({ queue: q.queue, got });
  }
  assert.notEqual(subs[0].queue, subs[1].queue);
  for (let i = 0; i < 3; i++) pub.publish(exchange, `ignored.${i}`, Buffer.from(`log ${i}`));
  for (const s of subs) {
    assert.deepEqual(await s.got.waitFor(3, 'fanout deliveries'), ['log 0', 'log 1', 'log 2']);
  }

  // exclusive queue disappears with its connection
  await c2.close();
  const chk = await c1.createChannel();
  const closed = new Promise((resolve) => chk.on('error', resolve));
  await assert.rejects(chk.checkQueue(subs[1].queue), (err) => err.code === 404);
  assert.equal((await closed).code, 404);
});

// --- Tutorial 4: Routing -------------------------------------------------------
test('t4 direct routing', OPTS, async (t) => {
  const [conn] = await connections(t);
  const items = cleanup(t);
  const exchange = unique('direct_logs');
  items.push(['exchange', exchange]);
  const ch = await conn.createConfirmChannel();
  await ch.assertExchange(exchange, 'direct', { durable: false });
  const qErr = (await ch.assertQueue('', { exclusive: true })).queue;
  const qAll = (await ch.assertQueue('', { exclusive: true })).queue;
  await ch.bindQueue(qErr, exchange, 'error');
  for (const sev of ['info', 'warning', 'error']) await ch.bindQueue(qAll, exchange, sev);

  for (const sev of ['info', 'warning', 'error', 'debug']) {
    ch.publish(exchange, sev, Buffer.from(`${sev} msg`));
  }
  await ch.waitForConfirms();
  assert.deepEqual(await drain(ch, qErr), ['error msg']);
  assert.deepEqual(await drain(ch, qAll), ['info msg', 'warning msg', 'error msg']);

  await ch.unbindQueue(qAll, exchange, 'info');
  ch.publish(exchange, 'info', Buffer.from('info 2'));
  ch.publish(exchange, 'warning', Buffer.from('warning 2'));
  await ch.waitForConfirms();
  assert.deepEqual(await drain(ch, qAll), ['warning 2']);

  // consumer sees exchange and routing key
  const got = new Collector();
  await ch.consume(qErr, (m) => got.push(m), { noAck: true });
  ch.publish(exchange, 'error', Buffer.from('disk full'));
  const [m] = await got.waitFor(1, 'direct delivery');
  assert.equal(m.fields.exchange, exchange);
  assert.equal(m.fields.routingKey, 'error');
  assert.equal(m.content.toString(), 'disk full');
});

// --- Tutorial 5: Topics -------------------------------------------------------
test('t5 topic routing with * and #', OPTS, async (t) => {
  const [conn] = await connections(t);
  const items = cleanup(t);
  const exchange = unique('topic_logs');
  items.push(['exchange', exchange]);
  const ch = await conn.createConfirmChannel();
  await ch.assertExchange(exchange, 'topic', { durable: false });
  const bindings = {
    q1: ['*.orange.*'],
    q2: ['*.*.rabbit', 'lazy.#'],
    qAll: ['#'],
    qMid: ['a.#.z'],
  };
  const queues = {};
  for (const [name, keys] of Object.entries(bindings)) {
    const q = (await ch.assertQueue('', { exclusive: true })).queue;
    queues[name] = q;
    for (const k of keys) await ch.bindQueue(q, exchange, k);
  }
  const keys = [
    'quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox', 'lazy.brown.fox',
    'lazy.pink.rabbit', 'quick.brown.fox', 'orange', 'quick.orange.male.rabbit',
    'lazy.orange.male.rabbit', 'lazy', 'a.z', 'a.b.c.z', 'a.b',
  ];
  for (const k of keys) ch.publish(exchange, k, Buffer.from(k));
  await ch.waitForConfirms();
  assert.deepEqual(await drain(ch, queues.q1),
    ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox']);
  assert.deepEqual(await drain(ch, queues.q2),
    ['quick.orange.rabbit', 'lazy.orange.elephant', 'lazy.brown.fox', 'lazy.pink.rabbit',
      'lazy.orange.male.rabbit', 'lazy']);
  assert.deepEqual(await drain(ch, queues.qAll), keys);
  assert.deepEqual(await drain(ch, queues.qMid), ['a.z', 'a.b.c.z']);
});

// --- Tutorial 6: RPC ------------------------------------------------------------
test('t6 RPC with reply_to and correlation_id', OPTS, async (t) => {
  const [clientConn, serverConn] = await connections(t, 2);
  const items = cleanup(t);
  const rpcQueue = unique('rpc_queue');
  items.push(['queue', rpcQueue]);

  const server = await serverConn.createChannel();
  await server.assertQueue(rpcQueue, { durable: false });
  await server.prefetch(1);
  const served = [];
  await server.consume(rpcQueue, (msg) => {
    const n = parseInt(msg.content.toString(), 10);
    served.push(n);
    server.sendToQueue(msg.properties.replyTo, Buffer.from(String(fib(n))),
      { correlationId: msg.properties.correlationId });
    server.ack(msg);
  });

  const client = await clientConn.createChannel();
  const { queue: callbackQueue } = await client.assertQueue('', { exclusive: true });
  const responses = new Collector();
  await client.consume(callbackQueue, (msg) => responses.push(msg), { noAck: true });

  const requests = new Map();
  for (const n of [0, 1, 10, 30]) {
    const id = crypto.randomUUID();
    requests.set(id, n);
    client.sendToQueue(rpcQueue, Buffer.from(String(n)),
      { correlationId: id, replyTo: callbackQueue });
  }
  const got = await responses.waitFor(requests.size, 'RPC responses');
  for (const m of got) {
    const n = requests.get(m.properties.correlationId);
    assert.notEqual(n, undefined, 'unknown correlation id');
    assert.equal(m.content.toString(), String(fib(n)));
  }
  assert.deepEqual(new Set(got.map((m) => m.properties.correlationId)), new Set(requests.keys()));
  assert.deepEqual(served.sort((a, b) => a - b), [0, 1, 10, 30]);
});
