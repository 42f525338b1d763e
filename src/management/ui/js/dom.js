// Small DOM helpers: element builder, tables, forms, number formats, flash,
// and the paged, filtered, polled list every list page is made of.

import { page as fetchPage } from './api.js';

// h('a', {href: '#/'}, 'text', child): an element; attributes starting with
// "on" become listeners, `dataset`/`style` objects are merged, null children
// are skipped. Text is always set as text, never parsed as HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'style') Object.assign(el.style, value);
    else if (key === 'className') el.className = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---------------------------------------------------------------- formats

export function num(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US');
}

export function rate(n) {
  if (n === null || n === undefined) return '–';
  const digits = n >= 100 ? 0 : n >= 10 ? 1 : 2;
  return `${Number(n).toLocaleString('en-US', { maximumFractionDigits: digits })}/s`;
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toLocaleString('en-US', { maximumFractionDigits: i ? 1 : 0 })} ${units[i]}`;
}

export function percent(share) {
  if (share === null || share === undefined) return '–';
  return `${(share * 100).toLocaleString('en-US', { maximumFractionDigits: 1 })} %`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return '–';
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${mm}m` : `${mm}m ${s % 60}s`;
}

export function time(ms) {
  if (!ms) return '–';
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 19);
}

// A rate from a stats object: rateOf(q.message_stats, 'publish').
export function rateOf(stats, key) {
  const details = stats && stats[`${key}_details`];
  return details ? details.rate : null;
}

export function json(value) {
  if (value === undefined || value === null) return '';
  if (typeof value === 'object' && Object.keys(value).length === 0) return '';
  return Object.entries(value)
    .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`)
    .join(', ');
}

// ---------------------------------------------------------------- flash

let flashTimer = null;
export function flash(message, kind = 'ok') {
  const box = document.getElementById('flash');
  replace(box, h('div', { className: `flash ${kind}`, 'data-testid': `flash-${kind}` }, message));
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => box.replaceChildren(), kind === 'error' ? 12000 : 5000);
}

// Runs an action of a button or form, reports its error as a flash.
export async function attempt(action, success) {
  try {
    const result = await action();
    if (success) flash(typeof success === 'function' ? success(result) : success, 'ok');
    return result;
  } catch (e) {
    flash(e.message, 'error');
    return undefined;
  }
}

// ---------------------------------------------------------------- tables

// columns: [{label, value: row => text|Node, num: true (right-aligned),
// wrap: true (long text may wrap), title}]
export function table(columns, rows, { empty = 'Nothing here.', testid } = {}) {
  if (!rows.length) return h('p', { className: 'muted empty', 'data-testid': testid }, empty);
  return h(
    'div',
    { className: 'table-wrap' },
    h(
      'table',
      { 'data-testid': testid },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { className: c.num ? 'num' : c.wrap ? 'wrap' : null, title: c.title }, c.label)))),
      h(
        'tbody',
        {},
        rows.map((row) =>
          h('tr', {}, columns.map((c) => h('td', { className: c.num ? 'num' : c.wrap ? 'wrap' : null }, c.value(row)))),
        ),
      ),
    ),
  );
}

// Name/value pairs as a definition list.
export function facts(pairs, testid) {
  return h(
    'dl',
    { className: 'facts', 'data-testid': testid },
    pairs
      .filter(([, v]) => v !== undefined)
      .map(([k, v, id]) => [h('dt', {}, k), h('dd', { 'data-testid': id }, v === null || v === '' ? '–' : v)]),
  );
}

export function section(title, ...children) {
  return h('section', { className: 'panel' }, h('h2', {}, title), ...children);
}

export function pill(text, kind = '', title = null) {
  return h('span', { className: `pill ${kind}`, title }, text);
}

// A button that asks once more before a destructive action: the first click
// arms it ("Really delete?") for a few seconds, the second runs it.
export function dangerButton(label, action, testid) {
  let armed = null;
  const button = h('button', { type: 'button', className: 'danger', 'data-testid': testid }, label);
  button.addEventListener('click', async () => {
    if (!armed) {
      button.textContent = `Confirm: ${label.toLowerCase()}`;
      button.classList.add('armed');
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove('armed');
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    button.classList.remove('armed');
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

// ---------------------------------------------------------------- forms

// fields: [{name, label, type: text|password|number|checkbox|select|textarea,
// options: [[value, label]] or [value], value, placeholder, required, hint}]
// onSubmit(values, form) is awaited; the form is disabled meanwhile.
export function form(fields, submitLabel, onSubmit, { testid, inline = false } = {}) {
  const el = h('form', { className: inline ? 'form inline' : 'form', 'data-testid': testid });
  for (const f of fields) el.append(field(f));
  const submit = h('button', { type: 'submit', 'data-testid': testid ? `${testid}-submit` : null }, submitLabel);
  el.append(h('div', { className: 'actions' }, submit));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = {};
    for (const f of fields) {
      const input = el.elements[f.name];
      if (!input) continue;
      values[f.name] = f.type === 'checkbox' ? input.checked : f.type === 'number' ? Number(input.value) : input.value;
    }
    submit.disabled = true;
    try {
      await onSubmit(values, el);
    } catch (e) {
      flash(e.message, 'error');
    } finally {
      submit.disabled = false;
    }
  });
  return el;
}

function field(f) {
  const id = `f-${f.name}-${Math.random().toString(36).slice(2, 8)}`;
  let input;
  const common = { id, name: f.name, required: f.required, placeholder: f.placeholder, 'data-testid': f.testid };
  if (f.type === 'select') {
    input = h(
      'select',
      common,
      (f.options || []).map((o) => {
        const [value, text] = Array.isArray(o) ? o : [o, o];
        return h('option', { value, selected: value === f.value }, text);
      }),
    );
  } else if (f.type === 'textarea') {
    input = h('textarea', { ...common, rows: f.rows || 3 });
    input.value = f.value ?? '';
  } else if (f.type === 'checkbox') {
    input = h('input', { ...common, type: 'checkbox', checked: !!f.value });
    return h('label', { className: 'check', for: id }, input, ' ', f.label);
  } else {
    input = h('input', { ...common, type: f.type || 'text', min: f.min, max: f.max, list: f.list });
    input.value = f.value ?? '';
  }
  return h('label', { for: id }, h('span', {}, f.label), input, f.hint ? h('small', { className: 'muted' }, f.hint) : null);
}

// "key = value" lines into an object; values that read as JSON (numbers,
// true/false, quoted strings, objects) are typed, anything else is a string.
export function parseArguments(text) {
  const out = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.indexOf('=');
    if (at < 1) throw new Error(`"${line}" is not key = value`);
    const key = line.slice(0, at).trim();
    const value = line.slice(at + 1).trim();
    try {
      out[key] = JSON.parse(value);
    } catch {
      out[key] = value;
    }
  }
  return out;
}

// A pager for a paged list answer; onPage(n) loads page n.
export function pager(answer, onPage) {
  if (!answer || answer.page_count <= 1) return null;
  return h(
    'div',
    { className: 'pager' },
    h('button', { type: 'button', disabled: answer.page <= 1, onclick: () => onPage(answer.page - 1) }, '‹ Previous'),
    ` page ${answer.page} of ${answer.page_count} (${num(answer.filtered_count)} of ${num(answer.total_count)}) `,
    h('button', { type: 'button', disabled: answer.page >= answer.page_count, onclick: () => onPage(answer.page + 1) }, 'Next ›'),
  );
}

// A list page's body: a name filter, the table, a pager; `refresh` reloads
// the current page (the page's poll calls it). columns as for table().
export function listView(path, columns, { testid, empty, pageSize = 100 } = {}) {
  const state = { page: 1, name: '' };
  const body = h('div', { className: 'list-body' });
  const filter = h('input', { type: 'search', placeholder: 'Filter by name', 'data-testid': testid ? `${testid}-filter` : null });
  let typing = null;
  filter.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.name = filter.value.trim();
      state.page = 1;
      refresh();
    }, 250);
  });
  async function refresh() {
    try {
      const answer = await fetchPage(path, { page: state.page, pageSize, name: state.name });
      if (answer.page_count && state.page > answer.page_count) {
        state.page = answer.page_count;
        return refresh();
      }
      replace(
        body,
        table(columns, answer.items, { empty, testid }),
        pager(answer, (n) => {
          state.page = n;
          refresh();
        }),
      );
    } catch (e) {
      if (e.status === 400 && state.page > 1) {
        // Page out of range (the list shrank): back to the first page.
        state.page = 1;
        return refresh();
      }
      replace(body, h('p', { className: 'error' }, e.message));
    }
    return undefined;
  }
  return { el: h('div', { className: 'list' }, h('div', { className: 'toolbar' }, filter), body), refresh };
}
