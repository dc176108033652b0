/**
 * The admin API (ARCHITECTURE.md §5): health, readiness, `/status`, Prometheus metrics,
 * leadership transfer and the status page, on Fastify, over HTTP or HTTPS.
 *
 * Auth: every route needs `Authorization: Bearer <token>` except the public ones (by default
 * `/healthz` and `/metrics`) and `/`, which is always public because the status page carries no
 * data (it fetches `/status` with the token). With no token configured every other route is
 * refused. Unknown paths need the token too, so an unauthenticated caller learns nothing about
 * which routes exist.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyError, LogController } from 'fastify';
import type pino from 'pino';
import { formatHostPort, parseHostPort } from './address.ts';
import type { Metrics } from './metrics.ts';
import type { AdminRuntime } from './runtime-view.ts';
import {
  errorSchema,
  healthSchema,
  readinessSchema,
  statusSchema,
  transferBodySchema,
  transferResultSchema,
} from './schemas.ts';
import { STATUS_PAGE_CSP, STATUS_PAGE_HTML } from './status-page.ts';

/** Options of {@link buildAdminServer}. */
export interface AdminAppOptions {
  runtime: AdminRuntime;
  metrics: Metrics;
  /** the bearer token read from `admin.token_file`; undefined: every non-public route is refused */
  token?: string;
  /** routes served without a token (`admin.public_routes`); `/` is always added */
  publicRoutes: string[];
  tls?: { cert: Buffer; key: Buffer };
  logger: pino.Logger;
}

/** Options of {@link startAdminServer}. */
export interface AdminServerOptions extends AdminAppOptions {
  /** `host:port` to bind (port 0: any free port) */
  listen: string;
}

/** A running admin server. */
export interface AdminServer {
  /** `host:port` actually bound */
  address: string;
  close(): Promise<void>;
}

/** The body of every 401: the same whatever was wrong, so nothing about the token leaks. */
const UNAUTHORIZED = { error: 'unauthorized' };

const sha256 = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

/**
 * A constant-time check of an `Authorization` header against the token. Both sides are hashed
 * first so that `timingSafeEqual` compares equal lengths and the time does not depend on where
 * (or whether, by length) the strings differ.
 */
export function bearerMatches(header: string | undefined, expected: string | undefined): boolean {
  if (expected === undefined || header === undefined) return false;
  const m = /^Bearer[ ]+(\S+)[ ]*$/i.exec(header);
  if (!m) return false;
  return timingSafeEqual(sha256(m[1] ?? ''), sha256(expected));
}

/** The path of a URL without its query string. */
function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/**
 * The admin API with every route and the auth hook, not listening yet: {@link startAdminServer}
 * binds it; tests drive it in-process with `inject()`.
 */
export function buildAdminServer(opts: AdminAppOptions) {
  const publicRoutes = new Set([...opts.publicRoutes, '/']);
  const log = opts.logger.child({ component: 'admin' });
  const app = Fastify({
    // Fastify logs through our pino logger, but not one line per request (a scrape every few
    // seconds and a status page polling every second would drown the node's log): requests
    // are logged below at debug only.
    loggerInstance: log,
    logController: new LogController({ disableRequestLogging: true }),
    // Reject what the schemas do not allow instead of quietly dropping or converting it.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
    bodyLimit: 4096,
    // A client trickling a request byte by byte cannot hold a connection: the whole request must
    // arrive within 10 s, and an idle keep-alive connection is closed after 5 s.
    requestTimeout: 10_000,
    keepAliveTimeout: 5_000,
    return503OnClosing: true,
    // null: plain HTTP
    https: opts.tls === undefined ? null : { cert: opts.tls.cert, key: opts.tls.key },
  });

  app.addHook('onRequest', async (request, reply) => {
    if (publicRoutes.has(pathOf(request.url))) return;
    if (!bearerMatches(request.headers.authorization, opts.token)) {
      return reply.code(401).header('www-authenticate', 'Bearer').send(UNAUTHORIZED);
    }
  });
  app.addHook('onResponse', async (request, reply) => {
    log.debug(
      { method: request.method, url: pathOf(request.url), status: reply.statusCode },
      'admin request',
    );
  });

  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ error: 'not found' }));
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err.validation !== undefined || (err.statusCode !== undefined && err.statusCode < 500)) {
      return reply.code(err.statusCode ?? 400).send({ error: err.message });
    }
    log.error({ err, url: pathOf(request.url) }, 'admin request failed');
    return reply.code(500).send({ error: 'internal error' });
  });

  const failures = { 400: errorSchema, 401: errorSchema, 500: errorSchema };

  app.get('/healthz', { schema: { response: { 200: healthSchema } } }, async () => ({ ok: true }));

  app.get(
    '/readyz',
    { schema: { response: { 200: readinessSchema, 503: readinessSchema, ...failures } } },
    async (_r, reply) => {
      const readiness = opts.runtime.readiness();
      return reply.code(readiness.ready ? 200 : 503).send(readiness);
    },
  );

  app.get('/status', { schema: { response: { 200: statusSchema, ...failures } } }, async () =>
    opts.runtime.status(),
  );

  app.get(
    '/metrics',
    { schema: { response: { 200: { type: 'string' }, ...failures } } },
    async (_r, reply) => {
      const text = await opts.metrics.registry.metrics();
      return reply.type(opts.metrics.registry.contentType).send(text);
    },
  );

  app.post<{ Body: { to?: string } }>(
    '/leader/transfer',
    {
      schema: {
        body: transferBodySchema,
        response: { 200: transferResultSchema, 409: transferResultSchema, ...failures },
      },
      // The body is optional: no body means "to any other member".
      preValidation: async (request) => {
        request.body ??= {};
      },
    },
    async (request, reply) => {
      const to = request.body.to;
      log.info({ to }, 'leadership transfer requested');
      const result = await opts.runtime.transferLeadership(to);
      // 409: the request was understood but the cluster state did not allow it.
      return reply.code(result.transferred ? 200 : 409).send(result);
    },
  );

  app.get('/', { schema: { response: { 200: { type: 'string' } } } }, async (_r, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', STATUS_PAGE_CSP)
      .header('referrer-policy', 'no-referrer')
      .header('x-content-type-options', 'nosniff')
      .header('cache-control', 'no-store')
      .send(STATUS_PAGE_HTML),
  );
  return app;
}

/** The admin API as {@link buildAdminServer} returns it (a Fastify instance). */
export type AdminApp = ReturnType<typeof buildAdminServer>;

/** Builds the admin API and starts listening on `opts.listen`; resolves once it listens. */
export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const { host, port } = parseHostPort(opts.listen);
  const app = buildAdminServer(opts);
  const log = opts.logger.child({ component: 'admin' });
  await app.listen({ host, port });
  const bound = app.server.address() as AddressInfo;
  const address = formatHostPort(bound.address, bound.port);
  log.info({ address, tls: opts.tls !== undefined }, 'admin API listening');
  return { address, close: () => app.close() };
}
