/**
 * The CLI's side of the admin API (`cometkms status`, `cometkms leader transfer`): finds the
 * node (from `--admin URL` or the config's `admin.listen`), reads the token, and turns every
 * failure into one operator-facing sentence.
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { loadConfig } from '../config/load.ts';
import { readSecretFile } from '../config/secrets.ts';
import { formatHostPort, parseHostPort } from './address.ts';
import type { TransferResult } from './runtime-view.ts';
import type { NodeStatus } from './types.ts';

/** How the CLI picks the node to talk to. */
export interface AdminTargetOptions {
  /** a CometKMS config: admin.listen, admin.token_file and TLS come from it */
  config?: string;
  /** base URL of the admin API, e.g. http://127.0.0.1:26780 */
  admin?: string;
  /** file holding the bearer token (overrides admin.token_file) */
  tokenFile?: string;
  /** PEM CA to trust for an https admin API (e.g. its self-signed certificate) */
  caFile?: string;
}

/** A resolved admin endpoint. */
export interface AdminTarget {
  baseUrl: string;
  token?: string;
  ca?: Buffer;
  /** where the token came from, for error messages */
  tokenSource?: string;
}

const DEFAULT_ADMIN_URL = 'http://127.0.0.1:26780';
const TIMEOUT_MS = 10_000;

/** A wildcard listen address is reached on the loopback of the same family. */
function connectHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '::1';
  return host;
}

/** Resolves the admin URL, token and CA from the options (and the config, when given). */
export async function resolveAdminTarget(o: AdminTargetOptions): Promise<AdminTarget> {
  if (o.config !== undefined && o.admin !== undefined)
    throw new Error('use either --config or --admin, not both');
  let baseUrl = DEFAULT_ADMIN_URL;
  let tokenFile = o.tokenFile;
  let tokenSource = tokenFile === undefined ? undefined : `--token-file ${tokenFile}`;
  if (o.config !== undefined) {
    const { admin, path } = await loadConfig(o.config);
    const { host, port } = parseHostPort(admin.listen);
    const scheme = admin.tls_cert_file === undefined ? 'http' : 'https';
    baseUrl = `${scheme}://${formatHostPort(connectHost(host), port)}`;
    if (tokenFile === undefined && admin.token_file !== undefined) {
      tokenFile = admin.token_file;
      tokenSource = `admin.token_file ${tokenFile} (from ${path})`;
    }
  } else if (o.admin !== undefined) {
    let url: URL;
    try {
      url = new URL(o.admin);
    } catch {
      throw new Error(`--admin: expected a URL such as ${DEFAULT_ADMIN_URL}, got ${JSON.stringify(o.admin)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new Error(`--admin: expected an http:// or https:// URL, got ${JSON.stringify(o.admin)}`);
    }
    baseUrl = url.origin;
  }
  const target: AdminTarget = { baseUrl };
  if (tokenFile !== undefined) {
    target.token = await readSecretFile(tokenFile, 'admin token');
    if (tokenSource !== undefined) target.tokenSource = tokenSource;
  }
  if (o.caFile !== undefined) target.ca = await readFile(o.caFile);
  return target;
}

interface Response {
  status: number;
  body: unknown;
}

/** One request to the admin API; rejects with an operator-facing message when unreachable. */
function request(
  target: AdminTarget,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<Response> {
  const url = new URL(path, target.baseUrl);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string> = { accept: 'application/json' };
  if (target.token !== undefined) headers['authorization'] = `Bearer ${target.token}`;
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(payload.length);
  }
  const lib = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(
      url,
      { method, headers, timeout: TIMEOUT_MS, ...(target.ca === undefined ? {} : { ca: target.ca }) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON: kept as text for the error message
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000}s`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ECONNREFUSED'
          ? 'connection refused (is the node running, and is this its admin.listen address?)'
          : err.message;
      reject(new Error(`cannot reach the admin API at ${target.baseUrl}: ${why}`));
    });
    req.end(payload);
  });
}

/** Throws the operator-facing error for a non-success answer. */
function failure(target: AdminTarget, path: string, r: Response): Error {
  if (r.status === 401) {
    return new Error(
      target.token === undefined
        ? `the admin API at ${target.baseUrl} requires a token: pass --token-file FILE or --config with admin.token_file`
        : `the admin API at ${target.baseUrl} refused the token from ${target.tokenSource ?? 'the token file'} (401 unauthorized)`,
    );
  }
  const detail =
    typeof r.body === 'object' && r.body !== null && 'error' in r.body
      ? String(r.body.error)
      : String(r.body);
  return new Error(`${path} on ${target.baseUrl} answered ${r.status}: ${detail.slice(0, 200)}`);
}

/** `GET /status`. */
export async function fetchStatus(target: AdminTarget): Promise<NodeStatus> {
  const r = await request(target, 'GET', '/status');
  if (r.status !== 200) throw failure(target, '/status', r);
  return r.body as NodeStatus;
}

/** `POST /leader/transfer`; a refusal (409) is a result, not an error. */
export async function requestLeaderTransfer(target: AdminTarget, to?: string): Promise<TransferResult> {
  const r = await request(target, 'POST', '/leader/transfer', to === undefined ? {} : { to });
  if (r.status !== 200 && r.status !== 409) throw failure(target, '/leader/transfer', r);
  return r.body as TransferResult;
}
