/**
 * The admin API with a fake runtime, driven in-process with Fastify's `inject()`: every route, the
 * bearer-token rule (public routes, missing / wrong / right token, no token configured), and the
 * response schemas that pin `/status` to the contract. Only listening itself (the bound address,
 * a bad listen address, HTTPS) is tested over a real socket on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { Metrics } from '../../../src/admin/metrics.ts';
import {
  type AdminApp,
  bearerMatches,
  buildAdminServer,
  startAdminServer,
} from '../../../src/admin/server.ts';
import type { NodeStatus } from '../../../src/admin/types.ts';
import { FakeRuntime } from './fake-runtime.ts';

const TOKEN = 's3cret-token';
const silent = pino({ level: 'silent' });
const auth = { authorization: `Bearer ${TOKEN}` };

function build(overrides: { token?: string | null; publicRoutes?: string[] } = {}): {
  app: AdminApp;
  runtime: FakeRuntime;
  metrics: Metrics;
} {
  const runtime = new FakeRuntime();
  const metrics = new Metrics({ processMetrics: false });
  const token = overrides.token === null ? undefined : (overrides.token ?? TOKEN);
  const app = buildAdminServer({
    runtime,
    metrics,
    ...(token === undefined ? {} : { token }),
    publicRoutes: overrides.publicRoutes ?? ['/healthz', '/metrics'],
    logger: silent,
  });
  return { app, runtime, metrics };
}

/** An answer of {@link call}, shaped like the parts of a fetch Response the tests read. */
interface Answer {
  status: number;
  headers: { get(name: string): string | null };
  json(): Promise<unknown>;
  text(): Promise<string>;
}

/** One request through `app.inject()` (no socket), with fetch's arguments. */
async function call(
  app: AdminApp,
  path: string,
  init: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string } = {},
): Promise<Answer> {
  const res = await app.inject({
    method: init.method ?? 'GET',
    url: path,
    headers: init.headers ?? {},
    ...(init.body === undefined ? {} : { payload: init.body }),
  });
  return {
    status: res.statusCode,
    headers: {
      get: (name) => {
        const v = res.headers[name.toLowerCase()];
        return v === undefined ? null : String(v);
      },
    },
    json: async () => res.json(),
    text: async () => res.body,
  };
}

describe('admin API with a token', () => {
  let ctx: ReturnType<typeof build>;
  before(async () => {
    ctx = build();
    await ctx.app.ready();
  });
  after(async () => {
    await ctx.app.close();
  });

  test('GET /healthz is public and answers {"ok":true}', async () => {
    const r = await call(ctx.app, `/healthz`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { ok: true });
  });

  test('GET /metrics is public and is Prometheus text', async () => {
    const r = await call(ctx.app, `/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await r.text();
    assert.match(text, /^# HELP cometkms_sign_requests_total /m);
    assert.match(text, /^cometkms_leader 0$/m);
  });

  test('GET / (status page) is public, self-contained HTML with a strict CSP', async () => {
    const r = await call(ctx.app, `/`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/html/);
    const csp = r.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /connect-src 'self'/);
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/=]+'/);
    const html = await r.text();
    assert.match(html, /<script>/);
    assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+href=|https?:\/\//, 'no external resource');
  });

  for (const [method, path] of [
    ['GET', '/status'],
    ['GET', '/readyz'],
    ['POST', '/leader/transfer'],
    ['GET', '/no-such-route'],
  ] as const) {
    test(`${method} ${path}: 401 without a token and with a wrong one, same body, no detail`, async () => {
      for (const headers of [
        {} as Record<string, string>,
        { authorization: 'Bearer wrong-token' },
        { authorization: `Bearer ${TOKEN}x` },
        { authorization: `Basic ${Buffer.from(`u:${TOKEN}`).toString('base64')}` },
        { authorization: TOKEN },
      ]) {
        const r = await call(ctx.app, `${path}`, { method, headers });
        assert.equal(r.status, 401, JSON.stringify(headers));
        assert.equal(r.headers.get('www-authenticate'), 'Bearer');
        assert.deepEqual(await r.json(), { error: 'unauthorized' });
      }
    });
  }

  test('a transfer refused for lack of a token never reaches the runtime', async () => {
    const before = ctx.runtime.transfers.length;
    await call(ctx.app, `/leader/transfer`, { method: 'POST' });
    assert.equal(ctx.runtime.transfers.length, before);
  });

  test('an unknown route with the right token is a 404', async () => {
    const r = await call(ctx.app, `/no-such-route`, { headers: auth });
    assert.equal(r.status, 404);
  });

  test('GET /status: exactly the NodeStatus contract, numbers as numbers', async () => {
    const r = await call(ctx.app, `/status`, { headers: auth });
    assert.equal(r.status, 200);
    const body = (await r.json()) as NodeStatus;
    assert.deepEqual(body, ctx.runtime.current);
    for (const c of body.chains) {
      assert.equal(typeof c.height, 'number');
      assert.equal(typeof c.round, 'number');
      assert.equal(typeof c.step, 'number');
    }
  });

  test('GET /status: fields outside the contract are not served; numeric strings become numbers', async () => {
    const status = structuredClone(ctx.runtime.current) as unknown as Record<string, unknown>;
    status['secret'] = 'must not leak';
    const chains = status['chains'] as Array<Record<string, unknown>>;
    chains[0]!['height'] = '123';
    chains[0]!['internal'] = { x: 1 };
    ctx.runtime.current = status as never;
    const body = (await (await call(ctx.app, `/status`, { headers: auth })).json()) as {
      secret?: unknown;
      chains: Array<{ internal?: unknown; height: unknown }>;
    };
    assert.equal(body.secret, undefined);
    assert.equal(body.chains[0]?.internal, undefined);
    assert.equal(body.chains[0]?.height, 123);
  });

  test('GET /status: a status missing a required field is a 500, not a different document', async () => {
    const status = structuredClone(ctx.runtime.current) as unknown as Record<string, unknown>;
    delete status['leader_id'];
    ctx.runtime.current = status as never;
    const r = await call(ctx.app, `/status`, { headers: auth });
    assert.equal(r.status, 500);
    assert.deepEqual(await r.json(), { error: 'internal error' });
  });

  test('GET /readyz: 200 when ready, 503 with the checks when not', async () => {
    ctx.runtime.ready = { ready: true, checks: { hsm: true } };
    let r = await call(ctx.app, `/readyz`, { headers: auth });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { ready: true, checks: { hsm: true } });
    ctx.runtime.ready = { ready: false, checks: { hsm: true, leader: 'no leader known' } };
    r = await call(ctx.app, `/readyz`, { headers: auth });
    assert.equal(r.status, 503);
    assert.deepEqual(await r.json(), { ready: false, checks: { hsm: true, leader: 'no leader known' } });
  });

  test('POST /leader/transfer: no body, an empty body and a target all reach the runtime', async () => {
    ctx.runtime.transfers.length = 0;
    ctx.runtime.transferAnswer = { transferred: true, message: 'handed over' };
    let r = await call(ctx.app, `/leader/transfer`, { method: 'POST', headers: auth });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { transferred: true, message: 'handed over' });
    const json = { ...auth, 'content-type': 'application/json' };
    r = await call(ctx.app, `/leader/transfer`, { method: 'POST', headers: json, body: '{}' });
    assert.equal(r.status, 200);
    r = await call(ctx.app, `/leader/transfer`, { method: 'POST', headers: json, body: '{"to":"kms-3"}' });
    assert.equal(r.status, 200);
    assert.deepEqual(ctx.runtime.transfers, [undefined, undefined, 'kms-3']);
  });

  test('POST /leader/transfer: 409 when the runtime refuses, 500 without detail when it throws', async () => {
    ctx.runtime.transferAnswer = { transferred: false, message: 'this node is not the leader' };
    let r = await call(ctx.app, `/leader/transfer`, { method: 'POST', headers: auth });
    assert.equal(r.status, 409);
    assert.deepEqual(await r.json(), { transferred: false, message: 'this node is not the leader' });
    ctx.runtime.transferError = new Error('etcd exploded at 10.0.0.1');
    r = await call(ctx.app, `/leader/transfer`, { method: 'POST', headers: auth });
    ctx.runtime.transferError = undefined;
    assert.equal(r.status, 500);
    assert.deepEqual(await r.json(), { error: 'internal error' });
  });

  test('POST /leader/transfer: bodies outside the schema are 400 and never reach the runtime', async () => {
    ctx.runtime.transfers.length = 0;
    const json = { ...auth, 'content-type': 'application/json' };
    for (const body of ['{"to":""}', '{"to":5}', '{"other":"x"}', '[]', '{not json']) {
      const r = await call(ctx.app, `/leader/transfer`, { method: 'POST', headers: json, body });
      assert.equal(r.status, 400, body);
      assert.equal(typeof ((await r.json()) as { error?: unknown }).error, 'string');
    }
    assert.deepEqual(ctx.runtime.transfers, []);
  });

  test('/metrics reflects the node’s metrics live', async () => {
    ctx.metrics.setLeader(true);
    ctx.metrics.observeDecision({
      chainId: 'chain-a',
      kind: 'vote',
      type: 1,
      height: 5n,
      round: 0,
      step: 2,
      outcome: 'signed',
      latencyMs: 1,
    });
    const text = await (await call(ctx.app, '/metrics')).text();
    assert.match(text, /^cometkms_leader 1$/m);
    assert.match(
      text,
      /^cometkms_sign_requests_total\{chain_id="chain-a",type="prevote",outcome="signed"\} 1$/m,
    );
  });
});

describe('admin API configuration', () => {
  test('no token configured: every non-public route is refused, even with some token', async () => {
    const ctx = build({ token: null });
    try {
      for (const headers of [{}, auth, { authorization: 'Bearer ' }]) {
        const r = await call(ctx.app, `/status`, { headers });
        assert.equal(r.status, 401);
      }
      assert.equal((await call(ctx.app, `/healthz`)).status, 200);
      assert.equal((await call(ctx.app, `/`)).status, 200);
    } finally {
      await ctx.app.close();
    }
  });

  test('public_routes is honoured: /metrics needs the token when it is not listed; / stays public', async () => {
    const ctx = build({ publicRoutes: ['/healthz'] });
    try {
      assert.equal((await call(ctx.app, `/metrics`)).status, 401);
      assert.equal((await call(ctx.app, `/metrics`, { headers: auth })).status, 200);
      assert.equal((await call(ctx.app, `/`)).status, 200);
      assert.equal((await call(ctx.app, `/healthz?probe=1`)).status, 200, 'query string ignored');
    } finally {
      await ctx.app.close();
    }
  });

  test('listening binds the requested host and reports the actual port', async () => {
    const server = await startAdminServer({
      listen: '127.0.0.1:0',
      runtime: new FakeRuntime(),
      metrics: new Metrics({ processMetrics: false }),
      token: TOKEN,
      publicRoutes: ['/healthz'],
      logger: silent,
    });
    try {
      assert.match(server.address, /^127\.0\.0\.1:\d+$/);
      assert.notEqual(server.address, '127.0.0.1:0');
      const r = await fetch(`http://${server.address}/status`, { headers: auth });
      assert.equal(r.status, 200);
      assert.equal(((await r.json()) as NodeStatus).node_id, 'kms-1');
    } finally {
      await server.close();
    }
  });

  test('a bad listen address is a clear error', async () => {
    await assert.rejects(
      startAdminServer({
        listen: 'localhost',
        runtime: new FakeRuntime(),
        metrics: new Metrics({ processMetrics: false }),
        publicRoutes: [],
        logger: silent,
      }),
      /expected host:port, got "localhost"/,
    );
  });

  test('serves HTTPS when given a certificate', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cometkms-admin-tls-'));
    try {
      execFileSync(
        'openssl',
        [
          'req',
          ...['-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
          ...['-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1'],
          ...['-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
        ],
        { stdio: 'ignore' },
      );
      const cert = readFileSync(join(dir, 'cert.pem'));
      const server = await startAdminServer({
        listen: '127.0.0.1:0',
        runtime: new FakeRuntime(),
        metrics: new Metrics({ processMetrics: false }),
        token: TOKEN,
        publicRoutes: ['/healthz'],
        tls: { cert, key: readFileSync(join(dir, 'key.pem')) },
        logger: silent,
      });
      try {
        const body = await new Promise<string>((resolve, reject) => {
          https
            .get(`https://${server.address}/status`, { ca: cert, headers: auth }, (res) => {
              let text = '';
              res.on('data', (c: Buffer) => {
                text += c.toString();
              });
              res.on('end', () => resolve(text));
            })
            .on('error', reject);
        });
        assert.equal(JSON.parse(body).node_id, 'kms-1');
      } finally {
        await server.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bearerMatches', () => {
  test('accepts exactly "Bearer <token>" (scheme case-insensitive) and nothing else', () => {
    assert.equal(bearerMatches(`Bearer ${TOKEN}`, TOKEN), true);
    assert.equal(bearerMatches(`bearer ${TOKEN}`, TOKEN), true);
    assert.equal(bearerMatches(`Bearer ${TOKEN} extra`, TOKEN), false);
    assert.equal(bearerMatches(`Bearer ${TOKEN.slice(0, -1)}`, TOKEN), false);
    assert.equal(bearerMatches(TOKEN, TOKEN), false);
    assert.equal(bearerMatches(undefined, TOKEN), false);
    assert.equal(bearerMatches(`Bearer ${TOKEN}`, undefined), false);
  });
});
