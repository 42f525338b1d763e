'use strict';
// One TLS connection with amqplib (`amqps://`): connect, publish one message,
// consume it. Used by tests/clients/run_tls.sh; the settings (TLS_* variables)
// and exit codes are those of tests/clients/python/tls_check.py:
//   0 ok, 2 refused-tls, 3 refused-auth, 1 error.
const fs = require('node:fs');
const crypto = require('node:crypto');
const amqp = require('amqplib');

const TIMEOUT = Number(process.env.AMQP_TEST_TIMEOUT || 10) * 1000;
const BODY_BYTES = Number(process.env.TLS_BODY_BYTES || 36);
const env = (name, dflt) => process.env[name] || dflt;

function withTimeout(promise, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${TIMEOUT}ms waiting for ${what}`)), TIMEOUT);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function connectOptions() {
  const external = env('TLS_LOGIN', 'plain') === 'external';
  const user = encodeURIComponent(env('TLS_USER', 'guest'));
  const pass = encodeURIComponent(env('TLS_PASS', 'guest'));
  const auth = external ? '' : `${user}:${pass}@`;
  const url = `amqps://${auth}${env('TLS_HOST', '127.0.0.1')}:${env('TLS_PORT', '5671')}/` +
    encodeURIComponent(env('TLS_VHOST', '/'));
  const socket = {
    ca: [fs.readFileSync(env('TLS_CA'))],
    servername: env('TLS_SERVER_NAME', 'localhost'),
    rejectUnauthorized: true,
  };
  if (env('TLS_CERT')) {
    socket.cert = fs.readFileSync(env('TLS_CERT'));
    socket.key = fs.readFileSync(env('TLS_KEY'));
  }
  if (env('TLS_MAX_VERSION') === '1.2') socket.maxVersion = 'TLSv1.2';
  if (external) socket.credentials = amqp.credentials.external();
  return { url, socket };
}

// refused-auth for the broker's 403 at login, error when the server offers no
// mechanism the client wants, refused-tls for any other failure to connect.
// The code must stand alone as a word: OpenSSL's messages carry hexadecimal
// addresses ("80BC01403A7F0000") that contain "403" by chance.
function refusedKind(err) {
  const text = String(err && (err.stack || err.message || err));
  if (/ACCESS[_-]REFUSED|\b403\b/.test(text)) return ['refused-auth', 3];
  if (/SASL mechanism .* is not provided by the server/.test(text)) return ['error', 1];
  return ['refused-tls', 2];
}

async function roundtrip(conn) {
  const ch = await conn.createChannel();
  const queue = `lepus-node-tls-${crypto.randomBytes(5).toString('hex')}`;
  await ch.assertQueue(queue, { exclusive: true, autoDelete: true });
  const body = crypto.randomBytes(BODY_BYTES);
  const got = new Promise((resolve) => {
    ch.consume(queue, (m) => resolve(m.content), { noAck: true });
  });
  ch.sendToQueue(queue, body, { contentType: 'application/octet-stream' });
  const received = await withTimeout(got, 'the delivery');
  if (!received.equals(body)) {
    throw new Error(`body of ${received.length} bytes (starts ${received.subarray(0, 16).toString('hex')}), ` +
      `want ${body.length} bytes (starts ${body.subarray(0, 16).toString('hex')})`);
  }
  return body.length;
}

async function main() {
  const { url, socket } = connectOptions();
  let conn;
  try {
    conn = await withTimeout(amqp.connect(url, socket), 'connect');
  } catch (err) {
    const [kind, code] = refusedKind(err);
    console.log(`${kind}: ${String(err.message || err).slice(0, 300)}`);
    return code;
  }
  conn.on('error', () => {}); // surfaced by the round trip instead
  try {
    const n = await roundtrip(conn);
    await conn.close();
    const version = require('amqplib/package.json').version;
    console.log(`ok: amqplib ${version}, ${n}-byte message published and consumed`);
    return 0;
  } catch (err) {
    console.log(`error: ${String(err.message || err).slice(0, 300)}`);
    return 1;
  }
}

// process.exit: a failed round trip leaves the connection (and its consumer)
// open, which would otherwise keep node running.
main().then((code) => process.exit(code), (err) => {
  console.log(`error: ${err}`);
  process.exit(1);
});
