// What clients hold open: connections (with Close), channels, consumers.

import { api, enc } from './api.js';
import { h, replace, num, rate, rateOf, time, section, attempt, dangerButton, listView, pill, json } from './dom.js';
import { queueHref } from './queues.js';

// The name the client gave its connection (RabbitMQ's user_provided_name,
// from the client property connection_name).
const providedName = (c) => c.user_provided_name || (c.client_properties && c.client_properties.connection_name) || '';
const peer = (x) => (x ? `${x.peer_host}:${x.peer_port}` : '');

function client(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(' ');
}

export async function renderConnections(root) {
  const list = listView(
    '/connections',
    [
      { label: 'Name', value: (c) => [c.name, providedName(c) ? h('div', { className: 'muted' }, providedName(c)) : null], wrap: true },
      { label: 'User', value: (c) => c.user },
      { label: 'Virtual host', value: (c) => c.vhost },
      { label: 'Client', value: client },
      { label: 'Protocol', value: (c) => [c.protocol, c.ssl ? [' ', pill('TLS', 'info')] : null] },
      { label: 'State', value: (c) => c.state },
      { label: 'Channels', value: (c) => num(c.channels), num: true },
      { label: 'From client', value: (c) => rate(rateOf(c, 'recv_oct')).replace('/s', ' B/s'), num: true },
      { label: 'To client', value: (c) => rate(rateOf(c, 'send_oct')).replace('/s', ' B/s'), num: true },
      { label: 'Connected at', value: (c) => time(c.connected_at) },
      {
        label: '',
        value: (c) =>
          dangerButton('Close', () => attempt(async () => {
            await api('DELETE', `/connections/${enc(c.name)}`);
            await list.refresh();
          }, `Connection ${c.name} closed.`), 'close-connection'),
      },
    ],
    { testid: 'connections', empty: 'No connections.' },
  );
  replace(root, h('h1', {}, 'Connections'), section('All connections', list.el));
  await list.refresh();
  return { refresh: list.refresh };
}

export async function renderChannels(root) {
  const mode = (c) => [c.confirm ? pill('C', 'info') : null, c.transactional ? pill('T') : null];
  const list = listView(
    '/channels',
    [
      { label: 'Channel', value: (c) => c.name },
      { label: 'User', value: (c) => c.user },
      { label: 'Virtual host', value: (c) => c.vhost },
      { label: 'Mode', value: mode, title: 'C: confirm mode, T: transactional' },
      { label: 'State', value: (c) => c.state },
      { label: 'Consumers', value: (c) => num(c.consumer_count), num: true },
      { label: 'Prefetch', value: (c) => num(c.prefetch_count), num: true },
      { label: 'Unacked', value: (c) => num(c.messages_unacknowledged), num: true },
      { label: 'Unconfirmed', value: (c) => num(c.messages_unconfirmed), num: true },
      { label: 'Publish', value: (c) => rate(rateOf(c.message_stats, 'publish')), num: true },
      { label: 'Deliver/get', value: (c) => rate(rateOf(c.message_stats, 'deliver_get')), num: true },
      { label: 'Ack', value: (c) => rate(rateOf(c.message_stats, 'ack')), num: true },
    ],
    { testid: 'channels', empty: 'No channels.' },
  );
  replace(root, h('h1', {}, 'Channels'), section('All channels', list.el));
  await list.refresh();
  return { refresh: list.refresh };
}

export async function renderConsumers(root) {
  const columns = [
    { label: 'Consumer tag', value: (c) => c.consumer_tag },
    { label: 'Queue', value: (c) => (c.queue ? h('a', { href: queueHref(c.queue.vhost, c.queue.name) }, c.queue.name) : '') },
    { label: 'Virtual host', value: (c) => (c.queue ? c.queue.vhost : '') },
    { label: 'Channel', value: (c) => (c.channel_details ? c.channel_details.name : '') },
    { label: 'From', value: (c) => peer(c.channel_details) },
    { label: 'Ack required', value: (c) => (c.ack_required ? 'yes' : 'no') },
    { label: 'Exclusive', value: (c) => (c.exclusive ? 'yes' : 'no') },
    { label: 'Prefetch', value: (c) => num(c.prefetch_count), num: true },
    { label: 'Active', value: (c) => (c.active === false ? 'no' : 'yes') },
    { label: 'Arguments', value: (c) => json(c.arguments), wrap: true },
  ];
  // /api/consumers is not paged in RabbitMQ's API.
  const list = listView('/consumers', columns, { testid: 'consumers', empty: 'No consumers.' });
  replace(root, h('h1', {}, 'Consumers'), section('All consumers', list.el));
  await list.refresh();
  return { refresh: list.refresh };
}
