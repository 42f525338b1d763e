// Admin: users (add, delete, tags), vhosts (add, delete), permissions (set,
// clear), policies and operator policies (set, clear), definitions (export
// as a download, import from a file).

import { api, get, enc } from './api.js';
import { h, replace, num, section, table, form, flash, attempt, dangerButton, parseArguments, json } from './dom.js';

const TABS = [
  ['users', 'Users'],
  ['vhosts', 'Virtual hosts'],
  ['permissions', 'Permissions'],
  ['policies', 'Policies'],
  ['definitions', 'Definitions'],
];
const TAGS = ['administrator', 'monitoring', 'policymaker', 'management'];

const tagsOf = (u) => (Array.isArray(u.tags) ? u.tags : String(u.tags || '').split(',').filter(Boolean));

export async function render(root, [tab]) {
  const body = h('div');
  replace(
    root,
    h('h1', {}, 'Admin'),
    h('nav', { className: 'tabs' }, TABS.map(([id, label]) => h('a', { href: `#/admin/${id}`, className: id === tab ? 'active' : null }, label))),
    body,
  );
  const pages = { users, vhosts, permissions, policies, definitions };
  return pages[tab](body);
}

function listed(body, title, load, columns, testid, extra) {
  const box = h('div');
  async function refresh() {
    try {
      replace(box, table(columns(refresh), await load(), { testid }));
    } catch (e) {
      replace(box, h('p', { className: 'error' }, e.message));
    }
  }
  replace(body, section(title, box), extra(refresh));
  return refresh;
}

async function users(body) {
  const refresh = listed(
    body,
    'Users',
    () => get('/users'),
    (again) => [
      { label: 'Name', value: (u) => u.name },
      { label: 'Tags', value: (u) => tagsOf(u).join(', ') },
      { label: 'Password', value: (u) => (u.password_hash ? 'set' : h('span', { className: 'warn' }, 'none (cannot log in with a password)')) },
      {
        label: '',
        value: (u) => dangerButton('Delete', () => attempt(async () => {
          await api('DELETE', `/users/${enc(u.name)}`);
          await again();
        }, `User ${u.name} deleted.`), 'delete-user'),
      },
    ],
    'users',
    (again) => [
      section(
        'Add or update a user',
        form(
          [
            { name: 'name', label: 'Username', required: true, testid: 'user-name' },
            { name: 'password', label: 'Password', type: 'password', hint: 'leave empty to keep the current password of an existing user' },
            { name: 'tags', label: 'Tags', placeholder: 'administrator', list: 'tag-list', hint: `comma-separated: ${TAGS.join(', ')}` },
          ],
          'Save user',
          async (v, el) => {
            const payload = { tags: v.tags.split(',').map((t) => t.trim()).filter(Boolean).join(',') };
            if (v.password) {
              payload.password = v.password;
            } else {
              // PUT without a password would clear it: keep the stored hash.
              let existing = null;
              try {
                existing = await get(`/users/${enc(v.name)}`);
              } catch (e) {
                if (e.status !== 404) throw e;
              }
              if (!existing) throw new Error('A new user needs a password.');
              payload.password_hash = existing.password_hash;
              payload.hashing_algorithm = existing.hashing_algorithm;
            }
            await api('PUT', `/users/${enc(v.name)}`, payload);
            flash(`User ${v.name} saved.`);
            el.reset();
            await again();
          },
          { testid: 'add-user' },
        ),
        h('datalist', { id: 'tag-list' }, TAGS.map((t) => h('option', { value: t }))),
      ),
    ],
  );
  await refresh();
  return { refresh };
}

async function vhosts(body) {
  const refresh = listed(
    body,
    'Virtual hosts',
    () => get('/vhosts'),
    (again) => [
      { label: 'Name', value: (v) => v.name },
      { label: 'Description', value: (v) => v.description || (v.metadata && v.metadata.description) || '' },
      { label: 'Tags', value: (v) => (v.tags || (v.metadata && v.metadata.tags) || []).join(', ') },
      { label: 'Ready', value: (v) => num(v.messages_ready), num: true },
      { label: 'Unacked', value: (v) => num(v.messages_unacknowledged), num: true },
      { label: 'Total', value: (v) => num(v.messages), num: true },
      {
        label: '',
        value: (v) => dangerButton('Delete', () => attempt(async () => {
          await api('DELETE', `/vhosts/${enc(v.name)}`);
          await again();
        }, `Virtual host ${v.name} deleted.`), 'delete-vhost'),
      },
    ],
    'vhosts',
    (again) => section(
      'Add a virtual host',
      form(
        [
          { name: 'name', label: 'Name', required: true, testid: 'vhost-name' },
          { name: 'description', label: 'Description' },
          { name: 'tags', label: 'Tags', placeholder: 'comma-separated' },
        ],
        'Add virtual host',
        async (v, el) => {
          await api('PUT', `/vhosts/${enc(v.name)}`, { description: v.description, tags: v.tags });
          flash(`Virtual host ${v.name} added.`);
          el.reset();
          await again();
        },
        { testid: 'add-vhost' },
      ),
    ),
  );
  await refresh();
  return { refresh };
}

async function permissions(body) {
  const [userList, vhostList] = await Promise.all([get('/users'), get('/vhosts')]);
  const refresh = listed(
    body,
    'Permissions',
    () => get('/permissions'),
    (again) => [
      { label: 'User', value: (p) => p.user },
      { label: 'Virtual host', value: (p) => p.vhost },
      { label: 'Configure', value: (p) => h('code', {}, p.configure) },
      { label: 'Write', value: (p) => h('code', {}, p.write) },
      { label: 'Read', value: (p) => h('code', {}, p.read) },
      {
        label: '',
        value: (p) => dangerButton('Clear', () => attempt(async () => {
          await api('DELETE', `/permissions/${enc(p.vhost)}/${enc(p.user)}`);
          await again();
        }, `Permissions of ${p.user} in ${p.vhost} cleared.`), 'clear-permissions'),
      },
    ],
    'permissions',
    (again) => section(
      'Set permissions',
      form(
        [
          { name: 'user', label: 'User', type: 'select', options: userList.map((u) => u.name) },
          { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostList.map((v) => v.name) },
          { name: 'configure', label: 'Configure regexp', value: '.*' },
          { name: 'write', label: 'Write regexp', value: '.*' },
          { name: 'read', label: 'Read regexp', value: '.*' },
        ],
        'Set permissions',
        async (v) => {
          await api('PUT', `/permissions/${enc(v.vhost)}/${enc(v.user)}`, { configure: v.configure, write: v.write, read: v.read });
          flash(`Permissions of ${v.user} in ${v.vhost} set.`);
          await again();
        },
        { testid: 'set-permissions' },
      ),
    ),
  );
  await refresh();
  return { refresh };
}

async function policies(body) {
  const vhostList = (await get('/vhosts')).map((v) => v.name);
  const load = async () => {
    const [normal, operator] = await Promise.all([get('/policies'), get('/operator-policies').catch(() => [])]);
    return [...normal.map((p) => ({ ...p, kind: 'policies' })), ...operator.map((p) => ({ ...p, kind: 'operator-policies' }))];
  };
  const refresh = listed(
    body,
    'Policies',
    load,
    (again) => [
      { label: 'Virtual host', value: (p) => p.vhost },
      { label: 'Name', value: (p) => p.name },
      { label: 'Kind', value: (p) => (p.kind === 'policies' ? 'policy' : 'operator policy') },
      { label: 'Pattern', value: (p) => h('code', {}, p.pattern) },
      { label: 'Apply to', value: (p) => p['apply-to'] },
      { label: 'Definition', value: (p) => json(p.definition), wrap: true },
      { label: 'Priority', value: (p) => num(p.priority), num: true },
      {
        label: '',
        value: (p) => dangerButton('Clear', () => attempt(async () => {
          await api('DELETE', `/${p.kind}/${enc(p.vhost)}/${enc(p.name)}`);
          await again();
        }, `Policy ${p.name} cleared.`), 'clear-policy'),
      },
    ],
    'policies',
    (again) => section(
      'Set a policy',
      form(
        [
          { name: 'kind', label: 'Kind', type: 'select', options: [['policies', 'Policy'], ['operator-policies', 'Operator policy']] },
          { name: 'vhost', label: 'Virtual host', type: 'select', options: vhostList },
          { name: 'name', label: 'Name', required: true },
          { name: 'pattern', label: 'Pattern (regexp)', required: true, placeholder: '^orders\\.' },
          { name: 'apply_to', label: 'Apply to', type: 'select', options: ['all', 'queues', 'exchanges'], value: 'all' },
          { name: 'priority', label: 'Priority', type: 'number', value: 0 },
          { name: 'definition', label: 'Definition', type: 'textarea', required: true, placeholder: 'max-length = 1000\nmessage-ttl = 60000\ndead-letter-exchange = dlx' },
        ],
        'Set policy',
        async (v) => {
          const definition = parseArguments(v.definition);
          const policy = { pattern: v.pattern, 'apply-to': v.apply_to, priority: v.priority, definition };
          await api('PUT', `/${v.kind}/${enc(v.vhost)}/${enc(v.name)}`, policy);
          flash(`Policy ${v.name} set.`);
          await again();
        },
        { testid: 'set-policy' },
      ),
    ),
  );
  await refresh();
  return { refresh };
}

async function definitions(body) {
  const vhostList = (await get('/vhosts')).map((v) => v.name);
  const exportForm = form(
    [{ name: 'vhost', label: 'Virtual host', type: 'select', options: [['', 'All (the whole broker)'], ...vhostList] }],
    'Download definitions',
    async (v) => {
      const data = await get(v.vhost ? `/definitions/${enc(v.vhost)}` : '/definitions');
      const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
      const url = URL.createObjectURL(blob);
      const day = new Date().toISOString().slice(0, 10);
      const link = h('a', { href: url, download: `lepus-definitions-${day}.json` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      flash('Definitions exported.');
    },
    { testid: 'export' },
  );
  const importForm = h('form', { className: 'form', 'data-testid': 'import' });
  const file = h('input', { type: 'file', name: 'file', accept: '.json,application/json', required: true });
  importForm.append(
    h('label', {}, h('span', {}, 'Definitions file (JSON)'), file),
    h('p', { className: 'muted' }, 'Merged into the running broker: what exists is kept, what the file has is added or updated.'),
    h('div', { className: 'actions' }, h('button', { type: 'submit' }, 'Upload definitions')),
  );
  importForm.addEventListener('submit', (event) => {
    event.preventDefault();
    attempt(async () => {
      const text = await file.files[0].text();
      try {
        JSON.parse(text);
      } catch (e) {
        throw new Error(`Not a JSON file: ${e.message}`);
      }
      await api('POST', '/definitions', text);
    }, 'Definitions imported.');
  });
  replace(body, h('div', { className: 'grid2' }, section('Export', exportForm), section('Import', importForm)));
  return null;
}
