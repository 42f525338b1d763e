// The shell: login, the #/… router, and the poll that refreshes the page.
//
// Each page is `render(root, params)` returning `{refresh}` or nothing;
// the shell calls refresh every POLL_MS while that page is shown and the tab
// is visible, and drops the page's timers when the route changes.

import { login, logout, session, whenUnauthorised } from './api.js';
import { h, replace, flash } from './dom.js';
import * as overview from './overview.js';
import * as queues from './queues.js';
import * as exchanges from './exchanges.js';
import * as clients from './clients.js';
import * as admin from './admin.js';

export const POLL_MS = 5000;

// [pattern, section (the nav entry lit), render]; captures are
// URI-decoded and passed as params.
const ROUTES = [
  [/^$|^\/$/, 'overview', overview.render],
  [/^\/queues$/, 'queues', queues.renderList],
  [/^\/queues\/([^/]+)\/([^/]+)$/, 'queues', queues.renderQueue],
  [/^\/exchanges$/, 'exchanges', exchanges.renderList],
  [/^\/exchanges\/([^/]+)\/([^/]*)$/, 'exchanges', exchanges.renderExchange],
  [/^\/connections$/, 'connections', clients.renderConnections],
  [/^\/channels$/, 'channels', clients.renderChannels],
  [/^\/consumers$/, 'consumers', clients.renderConsumers],
  [/^\/admin\/(users|vhosts|permissions|policies|definitions)$/, 'admin', admin.render],
];

const TITLES = {
  overview: 'Overview',
  queues: 'Queues',
  exchanges: 'Exchanges',
  connections: 'Connections',
  channels: 'Channels',
  consumers: 'Consumers',
  admin: 'Admin',
};

let poll = null;
let current = null;
let generation = 0;

async function route() {
  clearInterval(poll);
  poll = null;
  if (current && current.dispose) current.dispose();
  current = null;
  const me = session();
  if (!me) return showLogin();
  showSession(me.user);
  const path = location.hash.replace(/^#/, '');
  const root = document.getElementById('page');
  const mine = ++generation;
  for (const [pattern, sectionName, render] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.section === sectionName);
    }
    document.title = `${TITLES[sectionName]} · Lepus`;
    replace(root);
    const params = match.slice(1).map((p) => decodeURIComponent(p));
    let page;
    try {
      page = await render(root, params);
    } catch (e) {
      replace(root, h('p', { className: 'error' }, e.message));
      return undefined;
    }
    if (mine !== generation) {
      if (page && page.dispose) page.dispose();
      return undefined;
    }
    current = page || null;
    if (current && current.refresh) {
      poll = setInterval(() => {
        if (!document.hidden) current.refresh();
      }, POLL_MS);
    }
    return undefined;
  }
  replace(root, h('section', { className: 'panel' }, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Overview'))));
  return undefined;
}

function showLogin(message) {
  document.getElementById('nav').hidden = true;
  document.getElementById('session').hidden = true;
  replace(document.getElementById('page'));
  const box = document.getElementById('login');
  box.hidden = false;
  const error = document.getElementById('login-error');
  error.hidden = !message;
  error.textContent = message || '';
  document.getElementById('login-user').focus();
}

function showSession(user) {
  document.getElementById('login').hidden = true;
  document.getElementById('nav').hidden = false;
  document.getElementById('session').hidden = false;
  const tags = (Array.isArray(user.tags) ? user.tags : String(user.tags || '').split(',')).filter(Boolean);
  replace(document.getElementById('whoami'), user.name, tags.length ? h('span', { className: 'muted' }, ` (${tags.join(', ')})`) : null);
  // Users, vhosts, permissions and definitions are for administrators;
  // policymakers may set policies. Others would only meet 403s there.
  const admin = document.querySelector('#nav a[data-section="admin"]');
  admin.hidden = !tags.some((t) => t === 'administrator' || t === 'policymaker');
  admin.href = tags.includes('administrator') ? '#/admin/users' : '#/admin/policies';
}

document.getElementById('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const user = document.getElementById('login-user').value;
  const password = document.getElementById('login-password').value;
  const button = document.getElementById('login-submit');
  button.disabled = true;
  try {
    await login(user, password);
    document.getElementById('login-password').value = '';
    route();
  } catch (e) {
    const text = e.status === 401 ? 'Login failed: wrong username or password.' : `Login failed: ${e.message}`;
    showLogin(text);
  } finally {
    button.disabled = false;
  }
});

document.getElementById('logout').addEventListener('click', () => {
  logout();
  clearInterval(poll);
  showLogin();
  flash('Logged out.');
});

whenUnauthorised(() => {
  logout();
  clearInterval(poll);
  showLogin('Your credentials are no longer accepted; log in again.');
});

window.addEventListener('hashchange', route);
route();
