// Queues: the list with an add form; one queue's page with its facts,
// consumers, bindings, publish, get (the four ack modes), peek, purge, delete.

import { api, get, enc } from './api.js';
import {
  h, replace, num, rate, bytes, rateOf, json, section, facts, table, form, flash, attempt,
  dangerButton, parseArguments, listView, pill,
} from './dom.js';
import { vhostOptions, bindingsTable, bindForm } from './exchanges.js';

export const queueHref = (vhost, name) => `#/queues/${enc(vhost)}/${enc(name)}`;

// The short marks RabbitMQ's UI users know: D durable, AD auto-delete,
// Excl exclusive, and one per argument (the full value in its tooltip).
const ARGUMENT_MARKS = {
  'x-message-ttl': 'TTL',
  'x-expires': 'Exp',
  'x-max-length': 'Lim',
  'x-max-length-bytes': 'Lim B',
  'x-overflow': 'Ovfl',
  'x-dead-letter-exchange': 'DLX',
  'x-dead-letter-routing-key': 'DLK',
  'x-max-priority': 'Pri',
  'x-queue-mode': 'Mode',
  'x-single-active-consumer': 'SAC',
  'x-delivery-limit': 'DLim',
  'x-consumer-timeout': 'CTO',
};

export function argumentMarks(args) {
  return Object.entries(args || {})
    .filter(([key]) => key !== 'x-queue-type')
    .map(([key, value]) => pill(ARGUMENT_MARKS[key] || key, 'arg', `${key}: ${JSON.stringify(value)}`));
}

function features(q) {
  const marks = [];
  if (q.durable) marks.push(pill('D', 'info', 'durable'));
  if (q.auto_delete) marks.push(pill('AD', '', 'auto-delete'));
  if (q.exclusive) marks.push(pill('Excl', '', 'exclusive'));
  return [...marks, ...argumentMarks(q.arguments)];
}

const QUEUE_TYPES = ['classic', 'quorum', 'stream'];

export async function renderList(root) {
  const list = listView(
    '/queues',
    [
      { label: 'Virtual host', value: (q) => q.vhost },
      { label: 'Name', value: (q) => h('a', { href: queueHref(q.vhost, q.name) }, q.name) },
      { label: 'Type', value: (q) => q.type },
      { label: 'Features', value: features, wrap: true },
      { label: 'State', value: (q) => q.state },
      { label: 'Ready', value: (q) => num(q.messages_ready), num: true },
      { label: 'Unacked', value: (q) => num(q.messages_unacknowledged), num: true },
      { label: 'Total', value: (q) => num(q.messages), num: true },
      { label: 'Consumers', value: (q) => num(q.consumers), num: true },
      { label: 'Incoming', value: (q) => rate(rateOf(q.message_stats, 'publish')), num: true },
      { label: 'Deliver/get', value: (q) => rate(rateOf(q.message_stats, 'deliver_get')), num: true },
      { label: 'Ack', value: (q) => rate(rateOf(q.message_stats, 'ack')), num: true },
    ],
    { testid: 'queues', empty: 'No queues.' },
  );
  const vhosts = await vhostOptions();
  const add = form(
    [
      { name: 'vhost', label: 'Virtual host', type: 'select', options: vhosts, testid: 'add-queue-vhost' },
      { name: 'name', label: 'Name', required: true, testid: 'add-queue-name' },
      { name: 'type', label: 'Type', type: 'select', options: QUEUE_TYPES, value: 'classic' },
      { name: 'durable', label: 'Durable', type: 'checkbox', value: true, testid: 'add-queue-durable' },
      { name: 'auto_delete', label: 'Auto-delete', type: 'checkbox' },
      { name: 'arguments', label: 'Arguments', type: 'textarea', placeholder: 'x-message-ttl = 60000\nx-max-length = 1000', hint: 'key = value per line; numbers and true/false are typed' },
    ],
    'Add queue',
    async (v, el) => {
      const args = parseArguments(v.arguments);
      if (v.type !== 'classic') args['x-queue-type'] = v.type;
      await api('PUT', `/queues/${enc(v.vhost)}/${enc(v.name)}`, { durable: v.durable, auto_delete: v.auto_delete, arguments: args });
      flash(`Queue ${v.name} declared.`);
      el.elements.name.value = '';
      list.refresh();
    },
    { testid: 'add-queue' },
  );
  replace(root, h('h1', {}, 'Queues'), section('All queues', list.el), section('Add a queue', add));
  await list.refresh();
  return { refresh: list.refresh };
}

const ACK_MODES = [
  ['ack_requeue_true', 'Nack, requeue (peek)'],
  ['reject_requeue_true', 'Reject, requeue'],
  ['ack_requeue_false', 'Ack, remove from queue'],
  ['reject_requeue_false', 'Reject, do not requeue'],
];

function messagesView(messages) {
  if (!messages.length) return h('p', { className: 'muted', 'data-testid': 'get-empty' }, 'The queue is empty.');
  return messages.map((m, i) =>
    h(
      'div',
      { className: 'message', 'data-testid': 'message' },
      h('h3', {}, `Message ${i + 1}`, h('span', { className: 'muted' }, ` · ${num(m.message_count)} left in the queue`)),
      facts([
        ['Exchange', m.exchange === '' ? '(AMQP default)' : m.exchange],
        ['Routing key', m.routing_key],
        ['Redelivered', m.redelivered ? 'yes' : 'no'],
        ['Properties', json(m.properties)],
        ['Payload', `${num(m.payload_bytes)} bytes, encoding ${m.payload_encoding}`],
      ]),
      h('pre', { className: 'payload', 'data-testid': 'message-payload' }, m.payload),
    ),
  );
}

// A publish form: routing key (fixed when publishing to a queue), delivery
// mode, headers, properties, payload. POST …/exchanges/{vh}/{x}/publish.
export function publishForm(vhost, exchange, fixedKey, testid, onDone) {
  const fields = [
    fixedKey === undefined ? { name: 'routing_key', label: 'Routing key', testid: `${testid}-key` } : null,
    { name: 'delivery_mode', label: 'Delivery mode', type: 'select', options: [['1', '1 – non-persistent'], ['2', '2 – persistent']], value: '2' },
    { name: 'headers', label: 'Headers', type: 'textarea', rows: 2, placeholder: 'key = value' },
    { name: 'properties', label: 'Properties', type: 'textarea', rows: 2, placeholder: 'content_type = text/plain\npriority = 3' },
    { name: 'payload', label: 'Payload', type: 'textarea', rows: 4, testid: `${testid}-payload` },
  ].filter(Boolean);
  return form(
    fields,
    'Publish message',
    async (v) => {
      const properties = { ...parseArguments(v.properties), delivery_mode: Number(v.delivery_mode) };
      const headers = parseArguments(v.headers);
      if (Object.keys(headers).length) properties.headers = headers;
      const body = { properties, routing_key: fixedKey ?? v.routing_key, payload: v.payload, payload_encoding: 'string' };
      const answer = await api('POST', `/exchanges/${enc(vhost)}/${enc(exchange || 'amq.default')}/publish`, body);
      if (answer && answer.routed === false) flash('Message published, but not routed to any queue.', 'warn');
      else flash('Message published.');
      if (onDone) onDone();
    },
    { testid },
  );
}

export async function renderQueue(root, [vhost, name]) {
  const path = `/queues/${enc(vhost)}/${enc(name)}`;
  const summary = h('div');
  const consumers = h('div');
  const bindings = h('div');
  const results = h('div', { 'data-testid': 'get-results' });

  async function refresh() {
    let q;
    let b;
    try {
      [q, b] = await Promise.all([get(path), get(`${path}/bindings`)]);
    } catch (e) {
      replace(summary, h('p', { className: 'error' }, e.message));
      return;
    }
    const stats = q.message_stats || {};
    replace(
      summary,
      h(
        'div',
        { className: 'tiles' },
        h('div', { className: 'tile' }, h('div', { className: 'tile-value', 'data-testid': 'queue-ready' }, num(q.messages_ready)), h('div', { className: 'tile-label' }, 'Ready')),
        h('div', { className: 'tile' }, h('div', { className: 'tile-value', 'data-testid': 'queue-unacked' }, num(q.messages_unacknowledged)), h('div', { className: 'tile-label' }, 'Unacked')),
        h('div', { className: 'tile' }, h('div', { className: 'tile-value', 'data-testid': 'queue-messages' }, num(q.messages)), h('div', { className: 'tile-label' }, 'Total')),
        h('div', { className: 'tile object' }, h('div', { className: 'tile-value', 'data-testid': 'queue-consumers' }, num(q.consumers)), h('div', { className: 'tile-label' }, 'Consumers')),
      ),
      facts([
        ['Type', q.type],
        ['Features', features(q)],
        ['State', q.state],
        ['Arguments', json(q.arguments)],
        ['Policy', q.policy],
        ['Effective policy', json(q.effective_policy_definition)],
        ['Exclusive owner', q.owner_pid_details ? q.owner_pid_details.name : undefined],
        ['Message bytes', q.message_bytes !== undefined ? bytes(q.message_bytes) : undefined],
        ['Memory', q.memory !== undefined ? bytes(q.memory) : undefined],
        ['Rates', `publish ${rate(rateOf(stats, 'publish'))} · deliver/get ${rate(rateOf(stats, 'deliver_get'))} · ack ${rate(rateOf(stats, 'ack'))}`],
      ]),
    );
    replace(
      consumers,
      table(
        [
          { label: 'Consumer tag', value: (c) => c.consumer_tag },
          { label: 'Channel', value: (c) => (c.channel_details ? c.channel_details.name : '') },
          { label: 'Ack required', value: (c) => (c.ack_required ? 'yes' : 'no') },
          { label: 'Exclusive', value: (c) => (c.exclusive ? 'yes' : 'no') },
          { label: 'Prefetch', value: (c) => num(c.prefetch_count), num: true },
          { label: 'Active', value: (c) => (c.active === false ? 'no' : 'yes') },
        ],
        q.consumer_details || [],
        { empty: 'No consumers.' },
      ),
    );
    replace(bindings, bindingsTable(vhost, b, refresh, 'queue-bindings'));
  }

  const getForm = form(
    [
      { name: 'ackmode', label: 'Ack mode', type: 'select', options: ACK_MODES, value: 'ack_requeue_true', testid: 'get-ackmode' },
      { name: 'encoding', label: 'Encoding', type: 'select', options: [['auto', 'Auto string / base64'], ['base64', 'base64']] },
      { name: 'count', label: 'Messages', type: 'number', value: 1, min: 1, testid: 'get-count' },
      { name: 'truncate', label: 'Truncate payload at (bytes)', type: 'number', value: 50000, min: 1 },
    ],
    'Get messages',
    async (v) => {
      const body = { count: v.count, ackmode: v.ackmode, encoding: v.encoding, truncate: v.truncate };
      const messages = await api('POST', `${path}/get`, body);
      replace(results, messagesView(messages));
      refresh();
    },
    { testid: 'get', inline: true },
  );

  const peek = h('button', { type: 'button', 'data-testid': 'peek' }, 'Peek 10 (requeued)');
  peek.addEventListener('click', () =>
    attempt(async () => {
      const messages = await api('POST', `${path}/get`, { count: 10, ackmode: 'ack_requeue_true', encoding: 'auto', truncate: 50000 });
      replace(results, messagesView(messages));
      refresh();
    }),
  );
  const purge = dangerButton('Purge', () => attempt(async () => {
    await api('DELETE', `${path}/contents`);
    replace(results);
    await refresh();
  }, `Queue ${name} purged.`), 'purge');
  const remove = dangerButton('Delete queue', () => attempt(async () => {
    await api('DELETE', path);
    location.hash = '#/queues';
  }, `Queue ${name} deleted.`), 'delete-queue');

  const publish = publishForm(vhost, '', name, 'publish', refresh);

  replace(
    root,
    h('h1', {}, h('a', { href: '#/queues', className: 'crumb' }, 'Queues'), ' / ', h('span', { 'data-testid': 'queue-name' }, name), h('span', { className: 'muted vhost' }, ` in ${vhost}`)),
    section('Queue', summary, h('div', { className: 'actions' }, peek, purge, remove)),
    h('div', { className: 'grid2' }, section('Publish message', h('p', { className: 'muted' }, 'Through the default exchange, with the queue name as routing key.'), publish), section('Get messages', getForm, results)),
    section('Consumers', consumers),
    section('Bindings', bindings, h('h3', {}, 'Add a binding to this queue'), bindForm(vhost, { queue: name }, refresh)),
  );
  await refresh();
  return { refresh };
}
