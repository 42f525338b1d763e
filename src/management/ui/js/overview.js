// Overview: message rates and queued messages (charted from the samples of
// this page's poll), object totals, the node, and Lepus's own view: the load
// of each shard (busy share, turns per second, p99 turn, its inbound rings'
// occupancy, what it owns).

import { get } from './api.js';
import { h, replace, num, rate, bytes, percent, duration, rateOf, section, facts, table } from './dom.js';

// Samples kept for the charts: 15 minutes at the 5 s poll.
const SAMPLES_MAX = 180;
// A gap longer than this between samples is drawn as a break in the line.
const GAP_MS = 12000;

const RATE_SERIES = [
  ['publish', 'Publish', '#2f5d8a'],
  ['deliver', 'Deliver', '#3a9d5d'],
  ['ack', 'Ack', '#c7831b'],
];
const QUEUED_SERIES = [
  ['ready', 'Ready', '#2f5d8a'],
  ['unacked', 'Unacked', '#b5485d'],
];
export const SHARD_COLOURS = ['#2f5d8a', '#3a9d5d', '#c7831b', '#b5485d', '#6c5b9e', '#2a8f8f', '#8a6d3b', '#5b6770'];

// Kept across visits of the page, so coming back shows the recent past.
const history = { t: [], publish: [], deliver: [], ack: [], ready: [], unacked: [], shards: new Map() };

function record(overview, node) {
  const now = Date.now();
  const last = history.t[history.t.length - 1];
  const gap = last !== undefined && now - last * 1000 > GAP_MS;
  const stats = overview.message_stats || {};
  const totals = overview.queue_totals || {};
  const values = {
    publish: rateOf(stats, 'publish') ?? 0,
    deliver: rateOf(stats, 'deliver_get') ?? rateOf(stats, 'deliver') ?? 0,
    ack: rateOf(stats, 'ack') ?? 0,
    ready: totals.messages_ready ?? 0,
    unacked: totals.messages_unacknowledged ?? 0,
  };
  const shards = (node && node.lepus_shards) || [];
  const push = (t, v) => {
    history.t.push(t);
    for (const key of Object.keys(values)) history[key].push(v ? values[key] : null);
    for (const s of shards) {
      if (!history.shards.has(s.shard)) history.shards.set(s.shard, new Array(history.t.length - 1).fill(null));
    }
    for (const [id, series] of history.shards) {
      const s = shards.find((x) => x.shard === id);
      series.push(v && s ? s.busy_share * 100 : null);
    }
  };
  if (gap) push(last + 1, false);
  push(now / 1000, true);
  while (history.t.length > SAMPLES_MAX) {
    for (const key of ['t', ...Object.keys(values)]) history[key].shift();
    for (const series of history.shards.values()) series.shift();
  }
}

function chart(target, series, { height = 180, yLabel, max, legend = true } = {}) {
  const width = Math.max(260, target.clientWidth || 600);
  const opts = {
    width,
    height,
    legend: { show: legend, live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, max ?? Math.max(1, hi * 1.1)] } },
    axes: [{ stroke: '#667' }, { stroke: '#667', label: yLabel, size: 56 }],
    series: [{}, ...series.map(([, label, stroke]) => ({ label, stroke, width: 2, spanGaps: false, points: { show: false } }))],
  };
  // uPlot is the vendored global from /vendor (window.uPlot).
  return new window.uPlot(opts, [[], ...series.map(() => [])], target);
}

function tile(label, value, testid, kind = '') {
  return h('div', { className: `tile ${kind}` }, h('div', { className: 'tile-value', 'data-testid': testid }, value), h('div', { className: 'tile-label' }, label));
}

function micros(us) {
  if (us === undefined || us === null) return undefined;
  return us < 1000 ? `${num(us)} µs` : `${(us / 1000).toLocaleString('en-US', { maximumFractionDigits: 1 })} ms`;
}

// One bar per inbound ring (from each other shard): envelopes waiting out of
// the ring's capacity. `ring_occupancy` is an array indexed by the sending
// shard (the shard's own index is no ring); a plain number is shown as is.
function ringsView(s) {
  const occupancy = s.ring_occupancy;
  if (!Array.isArray(occupancy)) return h('div', { className: 'rings' }, `ring occupancy ${num(occupancy)}`);
  const capacity = s.ring_capacity || 0;
  const rings = occupancy.map((n, from) => [from, n]).filter(([from]) => from !== s.shard);
  if (!rings.length) return null;
  return h(
    'div',
    { className: 'rings', title: `inbound rings, ${num(capacity)} slots each` },
    h('div', { className: 'rings-label' }, 'inbound rings'),
    rings.map(([from, n]) => {
      const share = capacity ? Math.min(1, n / capacity) : 0;
      return h(
        'div',
        { className: 'ring' },
        h('span', { className: 'ring-from' }, `from ${from}`),
        h('span', { className: 'ring-bar' }, h('span', { className: 'ring-fill', style: { width: `${share * 100}%` } })),
        h('span', { className: 'ring-count' }, capacity ? `${num(n)} / ${num(capacity)}` : num(n)),
      );
    }),
  );
}

// One card per shard, coloured by how busy it is, with a stacked bar for
// each thing the shards share out (connections, queues), so an imbalance
// shows at a glance.
function shardsView(shards) {
  const total = (key) => shards.reduce((sum, s) => sum + (s[key] || 0), 0);
  const balance = (key, label) => {
    const all = total(key);
    return h(
      'div',
      { className: 'balance' },
      h('div', { className: 'balance-label' }, `${label} (${num(all)})`),
      h(
        'div',
        { className: 'balance-bar', 'data-testid': `balance-${key}` },
        all === 0
          ? h('div', { className: 'balance-empty' }, 'none')
          : shards.map((s, i) =>
              !s[key] ? null : h(
                'div',
                {
                  className: 'balance-part',
                  title: `shard ${s.shard}: ${num(s[key])}`,
                  style: { flexGrow: String(s[key]), background: SHARD_COLOURS[i % SHARD_COLOURS.length] },
                },
                `${s.shard}: ${num(s[key])}`,
              ),
            ),
      ),
    );
  };
  const cards = shards.map((s, i) => {
    const busy = Math.max(0, Math.min(1, s.busy_share || 0));
    const level = busy >= 0.9 ? 'hot' : busy >= 0.6 ? 'warm' : 'cool';
    return h(
      'div',
      { className: `shard ${level}`, 'data-testid': `shard-${s.shard}` },
      h('div', { className: 'shard-head' }, h('span', { className: 'swatch', style: { background: SHARD_COLOURS[i % SHARD_COLOURS.length] } }), `Shard ${s.shard}`),
      h('div', { className: 'shard-busy' }, percent(busy), h('small', {}, ' busy')),
      h('div', { className: 'meter' }, h('div', { className: 'meter-fill', style: { width: `${busy * 100}%` } })),
      facts([
        ['turns', rate(s.turns_per_sec)],
        ['turn p99', micros(s.turn_p99_us)],
        ['connections', num(s.connections)],
        ['queues', num(s.queues)],
        ['held publishers', s.held_publishers ? h('span', { className: 'warn' }, num(s.held_publishers)) : num(s.held_publishers)],
      ]),
      ringsView(s),
    );
  });
  return [h('div', { className: 'shards' }, cards), balance('connections', 'Connections by shard'), balance('queues', 'Queues by shard')];
}

export async function render(root) {
  const tiles = h('div', { className: 'tiles' });
  const rates = h('div', { className: 'chart', 'data-testid': 'rates-chart' });
  const queued = h('div', { className: 'chart' });
  const busy = h('div', { className: 'chart' });
  const shardBox = h('div', { 'data-testid': 'shards' });
  const nodeBox = h('div');
  const ratesNow = h('div', { className: 'rates-now' });
  const shardPanel = section('Shards', h('p', { className: 'muted' }, 'Each shard is one event-loop thread that owns its connections and queues. Busy share: the part of the last interval its loop spent working rather than waiting.'), shardBox, h('h3', {}, 'Busy share per shard'), busy);
  shardPanel.hidden = true;
  replace(
    root,
    h('h1', {}, 'Overview'),
    tiles,
    h('div', { className: 'grid2' }, section('Message rates', ratesNow, rates), section('Queued messages', queued)),
    shardPanel,
    section('Node', nodeBox),
  );
  // The rates' legend is the line of current values above the chart.
  const rateChart = chart(rates, RATE_SERIES, { yLabel: 'msg/s', legend: false });
  const queuedChart = chart(queued, QUEUED_SERIES, { yLabel: 'messages' });
  let busyChart = null;
  let busyShards = '';
  const resize = () => {
    for (const [c, el] of [[rateChart, rates], [queuedChart, queued], [busyChart, busy]]) {
      if (c && el.clientWidth) c.setSize({ width: el.clientWidth, height: c.height });
    }
  };
  window.addEventListener('resize', resize);

  async function refresh() {
    let overview;
    let nodes;
    try {
      [overview, nodes] = await Promise.all([get('/overview'), get('/nodes')]);
    } catch (e) {
      replace(nodeBox, h('p', { className: 'error' }, e.message));
      return;
    }
    const node = nodes[0] || {};
    record(overview, node);
    const t = overview.queue_totals || {};
    const o = overview.object_totals || {};
    const stats = overview.message_stats || {};
    replace(
      tiles,
      tile('Ready', num(t.messages_ready), 'overview-ready'),
      tile('Unacked', num(t.messages_unacknowledged), 'overview-unacked'),
      tile('Total', num(t.messages), 'overview-messages'),
      tile('Connections', num(o.connections), 'overview-connections', 'object'),
      tile('Channels', num(o.channels), 'overview-channels', 'object'),
      tile('Exchanges', num(o.exchanges), 'overview-exchanges', 'object'),
      tile('Queues', num(o.queues), 'overview-queues', 'object'),
      tile('Consumers', num(o.consumers), 'overview-consumers', 'object'),
    );
    replace(
      ratesNow,
      RATE_SERIES.map(([key, label, colour]) => {
        const value = key === 'deliver' ? rateOf(stats, 'deliver_get') ?? rateOf(stats, 'deliver') : rateOf(stats, key);
        return h('span', { className: 'rate-now' }, h('span', { className: 'swatch', style: { background: colour } }), `${label} `, h('strong', { 'data-testid': `rate-${key}` }, rate(value ?? 0)));
      }),
    );
    rateChart.setData([history.t, history.publish, history.deliver, history.ack]);
    queuedChart.setData([history.t, history.ready, history.unacked]);

    const shards = node.lepus_shards;
    shardPanel.hidden = !Array.isArray(shards);
    if (Array.isArray(shards)) {
      replace(shardBox, shardsView(shards));
      const ids = [...history.shards.keys()];
      if (ids.join() !== busyShards) {
        if (busyChart) busyChart.destroy();
        busyShards = ids.join();
        busyChart = chart(busy, ids.map((id, i) => [id, `shard ${id}`, SHARD_COLOURS[i % SHARD_COLOURS.length]]), { height: 160, yLabel: 'busy %', max: 100 });
      }
      busyChart.setData([history.t, ...ids.map((id) => history.shards.get(id))]);
    }

    const alarms = [node.mem_alarm && 'memory', node.disk_free_alarm && 'disk'].filter(Boolean);
    replace(
      nodeBox,
      facts([
        ['Node', node.name ?? overview.node],
        ['Version', `${overview.product_name || 'Lepus'} ${overview.product_version || overview.rabbitmq_version || ''}`],
        ['Uptime', duration(node.uptime)],
        ['Memory', node.mem_used !== undefined ? `${bytes(node.mem_used)} of ${bytes(node.mem_limit)} limit` : undefined],
        ['Disk free', node.disk_free !== undefined ? `${bytes(node.disk_free)} (limit ${bytes(node.disk_free_limit)})` : undefined],
        ['File descriptors', node.fd_used !== undefined ? `${num(node.fd_used)} of ${num(node.fd_total)}` : undefined],
        ['Processors', node.processors],
        ['Alarms', alarms.length ? h('span', { className: 'warn' }, alarms.join(', ')) : 'none'],
      ]),
      h('h3', {}, 'Listeners'),
      table(
        [
          { label: 'Protocol', value: (l) => l.protocol },
          { label: 'Address', value: (l) => l.ip_address },
          { label: 'Port', value: (l) => l.port, num: true },
        ],
        overview.listeners || [],
      ),
    );
    resize();
  }

  await refresh();
  return { refresh, dispose: () => window.removeEventListener('resize', resize) };
}
