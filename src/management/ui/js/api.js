// The HTTP API client: Basic credentials from sessionStorage on every call,
// RabbitMQ's JSON error shape ({"error", "reason"}) turned into ApiError.

const AUTH_KEY = 'lepus.auth';
const USER_KEY = 'lepus.user';

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason || `HTTP ${status}`);
    this.status = status;
  }
}

// Called when a request is refused with 401 after login (password changed,
// user deleted): main.js shows the login form again.
let onUnauthorised = () => {};
export function whenUnauthorised(callback) {
  onUnauthorised = callback;
}

function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return 'Basic ' + btoa(binary);
}

export function session() {
  const auth = sessionStorage.getItem(AUTH_KEY);
  const user = sessionStorage.getItem(USER_KEY);
  return auth && user ? { auth, user: JSON.parse(user) } : null;
}

export function logout() {
  sessionStorage.removeItem(AUTH_KEY);
  sessionStorage.removeItem(USER_KEY);
}

// Checks the credentials with GET /api/whoami; keeps them when they work.
// Returns the whoami answer ({name, tags}); throws ApiError otherwise.
export async function login(user, password) {
  const auth = basic(user, password);
  const me = await request('GET', '/whoami', undefined, auth);
  sessionStorage.setItem(AUTH_KEY, auth);
  sessionStorage.setItem(USER_KEY, JSON.stringify(me));
  return me;
}

async function request(method, path, body, auth) {
  // No Accept header: RabbitMQ answers 406 to a DELETE of …/contents that
  // asks for JSON.
  const headers = { Authorization: auth };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  if (method === 'DELETE' && path.startsWith('/connections/')) {
    headers['X-Reason'] = 'Closed from the Lepus web UI';
  }
  let response;
  try {
    response = await fetch('/api' + path, init);
  } catch (e) {
    throw new ApiError(0, `The broker did not answer (${e.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const reason = data && typeof data === 'object' ? data.reason || data.error : data;
    throw new ApiError(response.status, reason || `${response.status} ${response.statusText}`);
  }
  return data;
}

// One API call with the session's credentials: api('GET', '/overview').
export async function api(method, path, body) {
  const current = session();
  if (!current) {
    onUnauthorised();
    throw new ApiError(401, 'Not logged in');
  }
  try {
    return await request(method, path, body, current.auth);
  } catch (e) {
    if (e.status === 401) onUnauthorised();
    throw e;
  }
}

export const get = (path) => api('GET', path);

// A path piece: vhost "/" is %2F, as RabbitMQ's API wants it.
export const enc = (s) => encodeURIComponent(s);

// A list endpoint, a page at a time: {items, filtered_count, total_count,
// page, page_count} as RabbitMQ answers when asked with `page`.
export async function page(path, { page = 1, pageSize = 100, name = '' } = {}) {
  const query = new URLSearchParams({ page, page_size: pageSize, name, use_regex: 'false' });
  const sep = path.includes('?') ? '&' : '?';
  const data = await get(`${path}${sep}${query}`);
  if (Array.isArray(data)) {
    // An API that ignores paging: filter and cut here.
    const items = data.filter((x) => !name || String(x.name ?? x.consumer_tag ?? '').includes(name));
    const start = (page - 1) * pageSize;
    return {
      items: items.slice(start, start + pageSize),
      filtered_count: items.length,
      total_count: data.length,
      page,
      page_count: Math.max(1, Math.ceil(items.length / pageSize)),
    };
  }
  return data;
}
