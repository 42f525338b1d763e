// Exchanges: the list with an add form; one exchange's page with its
// bindings (both ways, add and remove), publish and delete. The bindings
// table and form are shared with the queue page.

import { api, get, enc } from './api.js';
import {
  h, replace, rate, rateOf, json, section, facts, table, form, flash, attempt, dangerButton, parseArguments,
  listView, pill,
} from './dom.js';
import { publishForm, queueHref } from './queues.js';

// The default exchange is "" in the API's answers and amq.default in paths.
const shown = (name) => (name === '' ? '(AMQP default)' : name);
export const exchangeHref = (vhost, name) => `#/exchanges/${enc(vhost)}/${enc(name === '' ? 'amq.default' : name)}`;

const TYPES = ['direct', 'fanout', 'topic', 'headers', 'x-consistent-hash'];

// The vhosts as select options, for the add forms.
export async function vhostOptions() {
  try {
    const vhosts = await get('/vhosts');
    return vhosts.map((v) => v.name);
  } catch {
    return ['/'];
  }
}

function features(x) {
  const marks = [];
  if (x.durable) marks.push(pill('D', 'info', 'durable'));
  if (x.auto_delete) marks.push(pill('AD', '', 'auto-delete'));
  if (x.internal) marks.push(pill('I', '', 'internal'));
  for (const [key, value] of Object.entries(x.arguments || {})) marks.push(pill(key === 'alternate-exchange' ? 'AE' : key, 'arg', `${key}: ${JSON.stringify(value)}`));
  return marks;
}

export async function renderList(root) {
  const list = listView(
    '/exchanges',
    [
      { label: 'Virtual host', value: (x) => x.vhost },
      { label: 'Name', value: (x) => h('a', { href: exchangeHref(x.vhost, x.name) }, shown(x.name)) },
      { label: 'Type', value: (x) => x.type },
      { label: 'Features', value: features, wrap: true },
      { label: 'Rate in', value: (x) => rate(rateOf(x.message_stats, 'publish_in')), num: true },
      { label: 'Rate out', value: (x) => rate(rateOf(x.message_stats, 'publish_out')), num: true },
    ],
    { testid: 'exchanges', empty: 'No exchanges.' },
  );
  const add = form(
    [
      { name: 'vhost', label: 'Virtual host', type: 'select', options: await vhostOptions() },
      { name: 'name', label: 'Name', required: true, testid: 'add-exchange-name' },
      { name: 'type', label: 'Type', type: 'select', options: TYPES, value: 'direct' },
      { name: 'durable', label: 'Durable', type: 'checkbox', value: true },
      { name: 'auto_delete', label: 'Auto-delete', type: 'checkbox' },
      { name: 'internal', label: 'Internal', type: 'checkbox' },
      { name: 'arguments', label: 'Arguments', type: 'textarea', placeholder: 'alternate-exchange = my-ae' },
    ],
    'Add exchange',
    async (v, el) => {
      const body = { type: v.type, durable: v.durable, auto_delete: v.auto_delete, internal: v.internal, arguments: parseArguments(v.arguments) };
      await api('PUT', `/exchanges/${enc(v.vhost)}/${enc(v.name)}`, body);
      flash(`Exchange ${v.name} declared.`);
      el.elements.name.value = '';
      list.refresh();
    },
    { testid: 'add-exchange' },
  );
  replace(root, h('h1', {}, 'Exchanges'), section('All exchanges', list.el), section('Add an exchange', add));
  await list.refresh();
  return { refresh: list.refresh };
}

// Bindings with an Unbind button each (none for the default exchange's
// implicit bindings, which cannot be removed).
export function bindingsTable(vhost, bindings, refresh, testid) {
  const destination = (b) =>
    b.destination_type === 'queue'
      ? h('a', { href: queueHref(vhost, b.destination) }, b.destination)
      : h('a', { href: exchangeHref(vhost, b.destination) }, b.destination);
  return table(
    [
      { label: 'From', value: (b) => h('a', { href: exchangeHref(vhost, b.source) }, shown(b.source)) },
      { label: 'To', value: (b) => [destination(b), h('span', { className: 'muted' }, ` (${b.destination_type})`)] },
      { label: 'Routing key', value: (b) => b.routing_key },
      { label: 'Arguments', value: (b) => json(b.arguments), wrap: true },
      {
        label: '',
        value: (b) =>
          b.source === ''
            ? ''
            : dangerButton('Unbind', () =>
                attempt(async () => {
                  const kind = b.destination_type === 'queue' ? 'q' : 'e';
                  await api('DELETE', `/bindings/${enc(vhost)}/e/${enc(b.source)}/${kind}/${enc(b.destination)}/${enc(b.properties_key)}`);
                  await refresh();
                }, 'Binding removed.'),
              'unbind'),
      },
    ],
    bindings,
    { empty: 'No bindings.', testid },
  );
}

// Add a binding: `fixed` is {queue} (bind that queue from an exchange) or
// {exchange} (bind from that exchange to a queue or exchange).
export function bindForm(vhost, fixed, refresh) {
  const fields = fixed.queue !== undefined
    ? [{ name: 'source', label: 'From exchange', required: true, testid: 'bind-source' }]
    : [
        { name: 'kind', label: 'To', type: 'select', options: [['q', 'Queue'], ['e', 'Exchange']] },
        { name: 'destination', label: 'Destination name', required: true, testid: 'bind-destination' },
      ];
  fields.push(
    { name: 'routing_key', label: 'Routing key', testid: 'bind-key' },
    { name: 'arguments', label: 'Arguments', type: 'textarea', rows: 2, placeholder: 'x-match = all' },
  );
  return form(
    fields,
    'Bind',
    async (v) => {
      const [source, kind, dest] = fixed.queue !== undefined ? [v.source, 'q', fixed.queue] : [fixed.exchange, v.kind, v.destination];
      await api('POST', `/bindings/${enc(vhost)}/e/${enc(source)}/${kind}/${enc(dest)}`, { routing_key: v.routing_key, arguments: parseArguments(v.arguments) });
      flash('Binding added.');
      await refresh();
    },
    { testid: 'bind', inline: true },
  );
}

export async function renderExchange(root, [vhost, pathName]) {
  const name = pathName === 'amq.default' ? '' : pathName;
  const path = `/exchanges/${enc(vhost)}/${enc(pathName || 'amq.default')}`;
  const summary = h('div');
  const outgoing = h('div');
  const incoming = h('div');

  async function refresh() {
    let x;
    let source;
    let dest;
    try {
      [x, source, dest] = await Promise.all([get(path), get(`${path}/bindings/source`), get(`${path}/bindings/destination`)]);
    } catch (e) {
      replace(summary, h('p', { className: 'error' }, e.message));
      return;
    }
    const stats = x.message_stats || {};
    replace(
      summary,
      facts([
        ['Type', x.type],
        ['Features', features(x)],
        ['Arguments', json(x.arguments)],
        ['Policy', x.policy],
        ['Rates', `in ${rate(rateOf(stats, 'publish_in'))} · out ${rate(rateOf(stats, 'publish_out'))}`],
      ]),
    );
    replace(outgoing, bindingsTable(vhost, source, refresh, 'exchange-bindings'));
    replace(incoming, bindingsTable(vhost, dest, refresh, 'exchange-bindings-in'));
  }

  const builtIn = name === '' || name.startsWith('amq.');
  const remove = builtIn
    ? null
    : dangerButton('Delete exchange', () => attempt(async () => {
        await api('DELETE', path);
        location.hash = '#/exchanges';
      }, `Exchange ${name} deleted.`), 'delete-exchange');
  replace(
    root,
    h('h1', {}, h('a', { href: '#/exchanges', className: 'crumb' }, 'Exchanges'), ' / ', shown(name), h('span', { className: 'muted vhost' }, ` in ${vhost}`)),
    section('Exchange', summary, remove ? h('div', { className: 'actions' }, remove) : null),
    section(
      'Bindings from this exchange',
      outgoing,
      name === '' ? null : [h('h3', {}, 'Add a binding from this exchange'), bindForm(vhost, { exchange: name }, refresh)],
    ),
    section('Bindings to this exchange', incoming),
    section('Publish message', publishForm(vhost, name, undefined, 'exchange-publish', refresh)),
  );
  await refresh();
  return { refresh };
}
