'use strict';
// amqplib: publisher confirms, direct reply-to, basic.get, nack, mandatory
// returns, channel-level errors.
const test = require('node:test');
const assert = require('node:assert/strict');
const { amqp, AMQP_URL, unique, Collector, connections, drain, cleanup, withTimeout } = require('./helpers');

const OPTS = { timeout: 30000 };

test('connection.start server properties and tune', OPTS, async (t) => {
  const [conn] = await connections(t);
  const props = conn.connection.serverProperties;
  assert.ok(props.capabilities, 'server_properties.capabilities missing');
  for (const cap of ['publisher_confirms', 'basic.nack', 'consumer_cancel_notify',
    'exchange_exchange_bindings', 'connection.blocked', 'authentication_failure_close']) {
    assert.equal(props.capabilities[cap], true, cap);
  }
  assert.ok(props.product);
  assert.ok(conn.connection.frameMax >= 4096);
  assert.ok(conn.connection.channelMax > 0);
});

test('bad credentials are refused', OPTS, async () => {
  const u = new URL(AMQP_URL);
  u.password = 'definitely-wrong';
  await assert.rejects(withTimeout(amqp.connect(u.toString()), 'auth failure'),
    (err) => /ACCESS_REFUSED|403|auth/i.test(String(err.message)));
});

test('confirms: ConfirmChannel callbacks and waitForConfirms', OPTS, async (t) => {
  const [conn] = await connections(t);
  const items = cleanup(t);
  const queue = unique('confirms');
  items.push(['queue', queue]);
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(queue, { durable: false });
  const n = 200;
  const acks = [];
  for (let i = 0; i < n; i++) {
    ch.sendToQueue(queue, Buffer.from(`m${i}`), {}, (err) => acks.push(err));
  }
  await ch.waitForConfirms();
  assert.equal(acks.length, n);
  assert.ok(acks.every((e) => e === null || e === undefined), 'some publishes were nacked');
  assert.equal((await ch.checkQueue(queue)).messageCount, n);

  // one by one
  for (let i = 0; i < 10; i++) {
    await new Promise((resolve, reject) => ch.sendToQueue(queue, Buffer.from('one'), {},
      (err) => (err ? reject(err) : resolve())));
  }
  assert.equal((await ch.checkQueue(queue)).messageCount, n + 10);
});

test('mandatory unroutable publish is returned (basic.return, 312 NO_ROUTE)', OPTS, async (t) => {
  const [conn] = await connections(t);
  const items = cleanup(t);
  const exchange = unique('mandatory');
  items.push(['exchange', exchange]);
  const ch = await conn.createConfirmChannel();
  await ch.assertExchange(exchange, 'direct', { durable: false });
  const returned = new Collector();
  ch.on('return', (m) => returned.push(m));
  let confirmErr = 'unset';
  ch.publish(exchange, 'nowhere', Buffer.from('bounce'), { mandatory: true, messageId: 'm1' },
    (err) => { confirmErr = err; });
  await ch.waitForConfirms();
  const [m] = await returned.waitFor(1, 'basic.return');
  assert.equal(confirmErr, null); // returned messages are still acked
  assert.equal(m.fields.replyCode, 312);
  assert.equal(m.fields.replyText, 'NO_ROUTE');
  assert.equal(m.fields.exchange, exchange);
  assert.equal(m.fields.routingKey, 'nowhere');
  assert.equal(m.content.toString(), 'bounce');
  assert.equal(m.properties.messageId, 'm1');
});

test('direct reply-to (amq.rabbitmq.reply-to)', OPTS, async (t) => {
  const [clientConn, serverConn] = await connections(t, 2);
  const items = cleanup(t);
  const rpcQueue = unique('rpc-direct');
  items.push(['queue', rpcQueue]);
  const server = await serverConn.createChannel();
  await server.assertQueue(rpcQueue, { durable: false });
  const seenReplyTo = [];
  await server.consume(rpcQueue, (msg) => {
    seenReplyTo.push(msg.properties.replyTo);
    server.publish('', msg.properties.replyTo, Buffer.from(msg.content.toString().toUpperCase()),
      { correlationId: msg.properties.correlationId });
    server.ack(msg);
  });

  const client = await clientConn.createChannel();
  const replies = new Collector();
  await client.consume('amq.rabbitmq.reply-to', (m) => replies.push(m), { noAck: true });
  for (let i = 0; i < 3; i++) {
    client.sendToQueue(rpcQueue, Buffer.from(`ping ${i}`),
      { replyTo: 'amq.rabbitmq.reply-to', correlationId: `c${i}` });
  }
  const got = await replies.waitFor(3, 'direct reply-to responses');
  assert.deepEqual(got.map((m) => [m.properties.correlationId, m.content.toString()]).sort(),
    [['c0', 'PING 0'], ['c1', 'PING 1'], ['c2', 'PING 2']]);
  for (const rt of seenReplyTo) assert.match(rt, /^amq\.rabbitmq\.reply-to\..+/);
  assert.equal(new Set(seenReplyTo).size, 1);
  for (const m of got) {
    assert.equal(m.fields.exchange, '');
    assert.equal(m.fields.routingKey, seenReplyTo[0]);
  }
});

test('basic.get, properties round trip and get-empty', OPTS, async (t) => {
  const [conn] = await connections(t);
  const items = cleanup(t);
  const queue = unique('get');
  items.push(['queue', queue]);
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(queue, { durable: false });
  assert.equal(await ch.get(queue), false);
  const headers = { 'x-int': 42, 'x-str': 'hello', 'x-bool': true, 'x-nested': { a: [1, 'b'] } };
  ch.sendToQueue(queue, Buffer.from('first'), {
    contentType: 'text/plain', contentEncoding: 'utf-8', headers, deliveryMode: 2, priority: 3,
    correlationId: 'cid', replyTo: 'rq', expiration: '60000', messageId: 'mid',
    timestamp: 1700000000, type: 't', appId: 'lepus-tests',
  });
  const big = Buffer.alloc(512 * 1024, 7);
  ch.sendToQueue(queue, big);
  await ch.waitForConfirms();

  const m = await ch.get(queue, { noAck: false });
  assert.equal(m.content.toString(), 'first');
  assert.equal(m.fields.messageCount, 1);
  assert.equal(m.fields.redelivered, false);
  const p = m.properties;
  assert.equal(p.contentType, 'text/plain');
  assert.equal(p.contentEncoding, 'utf-8');
  assert.equal(p.deliveryMode, 2);
  assert.equal(p.priority, 3);
  assert.equal(p.correlationId, 'cid');
  assert.equal(p.replyTo, 'rq');
  assert.equal(p.expiration, '60000');
  assert.equal(p.messageId, 'mid');
  assert.equal(p.timestamp, 1700000000);
  assert.equal(p.type, 't');
  assert.equal(p.appId, 'lepus-tests');
  assert.equal(p.headers['x-int'], 42);
  assert.equal(p.headers['x-str'], 'hello');
  assert.equal(p.headers['x-bool'], true);
  assert.deepEqual(p.headers['x-nested'], { a: [1, 'b'] });
  ch.ack(m);
  const m2 = await ch.get(queue, { noAck: true });
  assert.ok(m2.content.equals(big));
  assert.equal(m2.fields.messageCount, 0);
  assert.equal(await ch.get(queue), false);
});

test('nack/reject with requeue redelivers, without requeue drops', OPTS, async (t) => {
  const [conn] = await connections(t);
  const items = cleanup(t);
  const queue = unique('nack');
  items.push(['queue', queue]);
  const ch = await conn.createChannel();
  await ch.assertQueue(queue, { durable: false });
  await ch.prefetch(1);
  const got = new Collector();
  await ch.consume(queue, (m) => {
    got.push([m.content.toString(), m.fields.redelivered]);
    const n = got.items.length;
    if (n === 1) ch.reject(m, true);
    else if (n === 2) ch.nack(m, false, true);
    else if (n === 3) ch.nack(m, false, false); // dropped
    else ch.ack(m);
  });
  ch.sendToQueue(queue, Buffer.from('job'));
  await got.waitFor(3, 'three deliveries of the requeued message');
  ch.sendToQueue(queue, Buffer.from('sentinel'));
  const all = await got.waitFor(4, 'sentinel');
  assert.deepEqual(all, [['job', false], ['job', true], ['job', true], ['sentinel', false]]);
});

test('passive declare of a missing queue: 404 closes the channel only', OPTS, async (t) => {
  const [conn] = await connections(t);
  let connClosed = false;
  conn.on('close', () => { connClosed = true; });
  const ch = await conn.createChannel();
  const chError = new Promise((resolve) => ch.on('error', resolve));
  const chClose = new Promise((resolve) => ch.on('close', resolve));
  await assert.rejects(ch.checkQueue(unique('missing')), (err) => {
    assert.equal(err.code, 404);
    assert.match(err.message, /NOT_FOUND/);
    return true;
  });
  assert.equal((await withTimeout(chError, 'channel error event')).code, 404);
  await withTimeout(chClose, 'channel close event');
  await assert.rejects(ch.assertQueue('', { exclusive: true })); // channel is gone

  // connection is still usable
  assert.equal(connClosed, false);
  const ch2 = await conn.createConfirmChannel();
  const { queue } = await ch2.assertQueue('', { exclusive: true });
  ch2.sendToQueue(queue, Buffer.from('still alive'));
  await ch2.waitForConfirms();
  assert.deepEqual(await drain(ch2, queue), ['still alive']);
  assert.equal(connClosed, false);
});

test('channel errors (406, missing exchange) leave other channels working', OPTS, async (t) => {
  const [conn] = await connections(t);
  const items = cleanup(t);
  const exchange = unique('kind');
  items.push(['exchange', exchange]);
  const good = await conn.createConfirmChannel();
  await good.assertExchange(exchange, 'direct', { durable: false });
  const { queue } = await good.assertQueue('', { exclusive: true });
  await good.bindQueue(queue, exchange, 'k');

  const bad = await conn.createChannel();
  bad.on('error', () => {});
  await assert.rejects(bad.assertExchange(exchange, 'fanout', { durable: false }),
    (err) => err.code === 406);

  const bad2 = await conn.createChannel();
  const bad2Err = new Promise((resolve) => bad2.on('error', resolve));
  bad2.publish(unique('missing-x'), 'rk', Buffer.from('x'));
  assert.equal((await withTimeout(bad2Err, 'error for publish to missing exchange')).code, 404);

  good.publish(exchange, 'k', Buffer.from('after errors'));
  await good.waitForConfirms();
  assert.deepEqual(await drain(good, queue), ['after errors']);
});

test('server-sent basic.cancel when the queue is deleted', OPTS, async (t) => {
  const [c1, c2] = await connections(t, 2);
  const queue = unique('cancel-notify');
  const ch = await c1.createChannel();
  await ch.assertQueue(queue, { durable: false });
  const cancelled = new Collector();
  await ch.consume(queue, (msg) => { if (msg === null) cancelled.push(true); });
  const other = await c2.createChannel();
  await other.deleteQueue(queue);
  await cancelled.waitFor(1, 'consumer cancel (null message)');
});
