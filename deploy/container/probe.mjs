// Health probe for containers: GET a route of the local admin API and exit 0 on a 2xx answer,
// 1 otherwise. Used by the Dockerfile HEALTHCHECK and the Kubernetes exec probes, so the admin
// API can stay on 127.0.0.1 (it can transfer leadership) and still be probed.
//
//   node probe.mjs /healthz
//   node probe.mjs /readyz --token-file /run/secrets/admin.token
//
// COMETKMS_ADMIN_LISTEN (host:port, default 127.0.0.1:26780) says where the admin API listens,
// as it does for `cometkms start`. The token is sent only when --token-file is given, for routes
// that are not in admin.public_routes.
import { readFileSync } from 'node:fs';

const TIMEOUT_MS = 3000;

function fail(message) {
  process.stderr.write(`probe: ${message}\n`);
  process.exit(1);
}

const [route, flag, tokenFile, ...extra] = process.argv.slice(2);
if (route === undefined || !route.startsWith('/') || extra.length > 0) {
  fail('usage: node probe.mjs /route [--token-file FILE]');
}
const headers = {};
if (flag !== undefined) {
  if (flag !== '--token-file' || tokenFile === undefined)
    fail('usage: node probe.mjs /route [--token-file FILE]');
  headers.authorization = `Bearer ${readFileSync(tokenFile, 'utf8').trim()}`;
}
const listen = process.env.COMETKMS_ADMIN_LISTEN || '127.0.0.1:26780';
// A wildcard listen address is probed on loopback.
const target = listen.replace(/^(0\.0\.0\.0|\[::\]):/, '127.0.0.1:');

try {
  const res = await fetch(`http://${target}${route}`, { headers, signal: AbortSignal.timeout(TIMEOUT_MS) });
  if (res.status < 200 || res.status > 299) fail(`${route}: HTTP ${res.status}`);
} catch (err) {
  fail(`${route}: ${err instanceof Error ? err.message : String(err)}`);
}
