/**
 * Reads config.toml into a validated Config (ARCHITECTURE.md §5). Every key is checked by hand
 * against the contract: unknown keys are errors, and every error names the offending key path
 * (`chain[1].validator[0].addr`) so an operator can fix the file without reading code.
 */
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { type KeyType, PROTOCOL_VERSIONS, type ProtocolVersion } from '../cometbft/types.ts';
import type {
  AdminSection,
  ChainSection,
  ClusterSection,
  Config,
  HsmSection,
  NodeSection,
  ValidatorSection,
} from './types.ts';

/** A configuration that cannot be used; the message says which file, which key, and why. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Defaults of the optional keys. */
export const CONFIG_DEFAULTS = {
  adminListen: '127.0.0.1:26780',
  adminPublicRoutes: ['/healthz', '/metrics'],
  hsmProfile: 'softhsm2',
  leaseTtlS: 1,
  etcdPrefix: '/cometkms/',
  etcdCallTimeoutMs: 300,
  /**
   * Default `max_height_jump`: a little over a day of 1 s blocks (86 400), so a validator that was
   * offline for a day still signs on its return, while one hostile request far above the chain
   * (up to 2^62) cannot burn every height below it for good.
   */
  maxHeightJump: 100_000,
} as const;

/** Environment variables that override a key of the file. */
export const ENV_OVERRIDES = {
  COMETKMS_NODE_ID: 'node.id',
  COMETKMS_HOME: 'node.home',
  COMETKMS_ADMIN_LISTEN: 'admin.listen',
} as const;

const KEY_TYPES: readonly KeyType[] = ['ed25519', 'secp256k1'];
const NODE_ID = /^[A-Za-z0-9._-]+$/;
const HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$/;
/** CometBFT's MaxChainIDLen */
const MAX_CHAIN_ID_LEN = 50;

type Table = Record<string, unknown>;

/** Reads typed values out of one TOML table; every failure names the full key path. */
class Section {
  constructor(
    private readonly file: string,
    private readonly baseDir: string,
    readonly path: string,
    private readonly table: Table,
  ) {}

  /** Throws the ConfigError for `key` (a key of this table, or '' for the table itself). */
  fail(key: string, message: string): never {
    const where = key === '' ? this.path : this.path === '' ? key : `${this.path}.${key}`;
    throw new ConfigError(`config ${this.file}: ${where}: ${message}`);
  }

  /** Rejects every key that is not in `allowed`. */
  only(allowed: readonly string[]): void {
    for (const key of Object.keys(this.table)) {
      if (!allowed.includes(key)) this.fail(key, `unknown key (allowed here: ${allowed.join(', ')})`);
    }
  }

  has(key: string): boolean {
    return this.table[key] !== undefined;
  }

  /** A sub-table; absent gives an empty one when `optional`, else an error. */
  section(key: string, optional = false): Section | undefined {
    const v = this.table[key];
    const path = this.path === '' ? key : `${this.path}.${key}`;
    if (v === undefined) {
      if (optional) return undefined;
      this.fail(key, 'missing section');
    }
    if (!isTable(v)) this.fail(key, `expected a table ([${path}]), got ${show(v)}`);
    return new Section(this.file, this.baseDir, path, v);
  }

  /** An optional sub-table read as empty when absent, so its defaults apply. */
  sectionOrEmpty(key: string): Section {
    return this.section(key, true) ?? new Section(this.file, this.baseDir, key, {});
  }

  /** An array of tables (`[[key]]`), at least one. */
  tables(key: string, plural: string): Section[] {
    const v = this.table[key];
    // the TOML header names no indexes: [[chain.validator]], not [[chain[0].validator]]
    const path = (this.path === '' ? key : `${this.path}.${key}`).replace(/\[\d+\]/g, '');
    if (v === undefined) this.fail(key, `at least one [[${path}]] is required`);
    if (!Array.isArray(v) || v.length === 0) this.fail(key, `expected one or more [[${path}]] tables`);
    return v.map((item, i) => {
      const itemPath = this.path === '' ? `${plural}[${i}]` : `${this.path}.${plural}[${i}]`;
      if (!isTable(item)) throw new ConfigError(`config ${this.file}: ${itemPath}: expected a table`);
      return new Section(this.file, this.baseDir, itemPath, item);
    });
  }

  string(key: string, def?: string): string {
    const v = this.table[key];
    if (v === undefined) {
      if (def !== undefined) return def;
      this.fail(key, 'missing required key');
    }
    if (typeof v !== 'string') this.fail(key, `expected a string, got ${show(v)}`);
    if (v.length === 0) this.fail(key, 'must not be empty');
    return v;
  }

  optionalString(key: string): string | undefined {
    return this.has(key) ? this.string(key) : undefined;
  }

  matching(key: string, re: RegExp, what: string, def?: string): string {
    const v = this.string(key, def);
    if (!re.test(v)) this.fail(key, `expected ${what}, got ${JSON.stringify(v)}`);
    return v;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[]): T {
    const v = this.string(key);
    if (!(allowed as readonly string[]).includes(v)) {
      this.fail(
        key,
        `expected one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${JSON.stringify(v)}`,
      );
    }
    return v as T;
  }

  integer(key: string, min: number, max: number, def?: number): number {
    const v = this.table[key];
    if (v === undefined) {
      if (def !== undefined) return def;
      this.fail(key, 'missing required key');
    }
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(key, `expected an integer, got ${show(v)}`);
    if (v < min || v > max) this.fail(key, `must be between ${min} and ${max}, got ${v}`);
    return v;
  }

  /** A file path; relative paths are taken relative to the config file's directory. */
  filePath(key: string): string {
    return resolve(this.baseDir, this.string(key));
  }

  optionalFilePath(key: string): string | undefined {
    return this.has(key) ? this.filePath(key) : undefined;
  }

  /** `host:port`; port 0 (any free port) only when `listen`. */
  hostPort(key: string, opts: { listen: boolean; def?: string }): string {
    const v = this.string(key, opts.def);
    const err = checkHostPort(v, opts.listen);
    if (err) this.fail(key, `expected host:port, got ${JSON.stringify(v)} (${err})`);
    return v;
  }

  stringArray(
    key: string,
    def: readonly string[] | undefined,
    check: (item: string) => string | undefined,
  ): string[] {
    const v = this.table[key];
    if (v === undefined) {
      if (def !== undefined) return [...def];
      this.fail(key, 'missing required key');
    }
    if (!Array.isArray(v)) this.fail(key, `expected an array of strings, got ${show(v)}`);
    return v.map((item, i) => {
      if (typeof item !== 'string') this.fail(`${key}[${i}]`, `expected a string, got ${show(item)}`);
      const err = check(item);
      if (err) this.fail(`${key}[${i}]`, `${err}, got ${JSON.stringify(item)}`);
      return item;
    });
  }

  /** Replaces a value by an environment override before it is read. */
  override(key: string, value: string | undefined): void {
    if (value !== undefined && value !== '') this.table[key] = value;
  }
}

/** Drops the keys whose value is undefined, so absent optional keys stay absent. */
function defined<T extends object>(obj: T): T {
  for (const [k, v] of Object.entries(obj)) if (v === undefined) delete (obj as Record<string, unknown>)[k];
  return obj;
}

function isTable(v: unknown): v is Table {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  // smol-toml builds tables without a prototype; anything with another prototype is a TomlDate.
  const proto = Object.getPrototypeOf(v);
  return proto === null || proto === Object.prototype;
}

function show(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (isTable(v)) return 'a table';
  if (typeof v === 'string') return JSON.stringify(v);
  return `${typeof v === 'object' ? 'a date' : typeof v} ${String(v)}`;
}

/** Why `v` is not a valid host:port, or undefined if it is. */
function checkHostPort(v: string, allowPortZero: boolean): string | undefined {
  const colon = v.lastIndexOf(':');
  if (colon <= 0) return 'missing port';
  const host = v.slice(0, colon);
  const port = v.slice(colon + 1);
  if (!HOST.test(host)) return 'bad host';
  if (!/^[0-9]{1,5}$/.test(port)) return 'bad port';
  const n = Number(port);
  if (n > 65535 || (n === 0 && !allowPortZero)) return 'port out of range';
  return undefined;
}

function checkValidatorAddr(v: string): boolean {
  if (v.startsWith('tcp://')) return checkHostPort(v.slice('tcp://'.length), false) === undefined;
  if (v.startsWith('unix://')) {
    const p = v.slice('unix://'.length);
    return isAbsolute(p) && p.length > 1;
  }
  return false;
}

function checkEtcdEndpoint(v: string): string | undefined {
  const m = /^https?:\/\/(.*)$/.exec(v);
  if (!m || checkHostPort(m[1] ?? '', false) !== undefined)
    return 'expected http://host:port or https://host:port';
  return undefined;
}

function readNode(root: Section, env: NodeJS.ProcessEnv): NodeSection {
  const s = root.section('node')!;
  s.only(['id', 'home']);
  s.override('id', env['COMETKMS_NODE_ID']);
  const home = env['COMETKMS_HOME'];
  // A home from the environment comes from the operator's shell: relative to the working directory.
  s.override('home', home ? resolve(home) : undefined);
  return { id: s.matching('id', NODE_ID, 'a node id of [A-Za-z0-9._-]'), home: s.filePath('home') };
}

function readHsm(root: Section): HsmSection {
  const s = root.section('hsm')!;
  s.only(['module', 'profile', 'token_label', 'pin_file']);
  return defined({
    module: s.filePath('module'),
    profile: s.matching('profile', NODE_ID, 'a profile name of [A-Za-z0-9._-]', CONFIG_DEFAULTS.hsmProfile),
    token_label: s.string('token_label'),
    pin_file: s.optionalFilePath('pin_file'),
  });
}

function bothOrNeither(s: Section, a: string, b: string): void {
  if (s.has(a) !== s.has(b)) s.fail(s.has(a) ? b : a, `required together with ${s.has(a) ? a : b}`);
}

function readAdmin(root: Section, env: NodeJS.ProcessEnv): AdminSection {
  const s = root.sectionOrEmpty('admin');
  s.only(['listen', 'token_file', 'public_routes', 'tls_cert_file', 'tls_key_file']);
  s.override('listen', env['COMETKMS_ADMIN_LISTEN']);
  bothOrNeither(s, 'tls_cert_file', 'tls_key_file');
  return defined({
    listen: s.hostPort('listen', { listen: true, def: CONFIG_DEFAULTS.adminListen }),
    token_file: s.optionalFilePath('token_file'),
    public_routes: s.stringArray('public_routes', CONFIG_DEFAULTS.adminPublicRoutes, (r) =>
      /^\/[^\s]*$/.test(r) ? undefined : 'expected a route starting with "/"',
    ),
    tls_cert_file: s.optionalFilePath('tls_cert_file'),
    tls_key_file: s.optionalFilePath('tls_key_file'),
  });
}

function readCluster(root: Section): ClusterSection | undefined {
  const s = root.section('cluster', true);
  if (!s) return undefined;
  s.only([
    'etcd_endpoints',
    'lease_ttl_s',
    'etcd_prefix',
    'etcd_call_timeout_ms',
    'etcd_username',
    'etcd_password_file',
    'forward_listen',
    'forward_advertise',
    'tls_ca_file',
    'tls_cert_file',
    'tls_key_file',
  ]);
  const endpoints = s.stringArray('etcd_endpoints', undefined, checkEtcdEndpoint);
  if (endpoints.length === 0) s.fail('etcd_endpoints', 'at least one endpoint is required');
  // Followers forward to the leader over mutual TLS, always: without these files `start` could
  // not run, so the config is refused here, where the key path can be named.
  for (const key of ['tls_ca_file', 'tls_cert_file', 'tls_key_file']) {
    if (!s.has(key)) {
      s.fail(
        key,
        'required: nodes forward requests to the leader over mutual TLS with tls_ca_file, ' +
          'tls_cert_file and tls_key_file, which also secure https:// etcd endpoints ' +
          '(make them with deploy/tls/make-certs.sh)',
      );
    }
  }
  bothOrNeither(s, 'etcd_username', 'etcd_password_file');
  const advertise = s.hostPort('forward_advertise', { listen: false });
  if (/^(0\.0\.0\.0|\[::\]):/.test(advertise)) {
    s.fail('forward_advertise', `must be an address other nodes can dial, got ${JSON.stringify(advertise)}`);
  }
  return defined({
    etcd_endpoints: endpoints,
    lease_ttl_s: s.integer('lease_ttl_s', 1, 3600, CONFIG_DEFAULTS.leaseTtlS),
    etcd_prefix: s.matching(
      'etcd_prefix',
      /^\/\S*$/,
      'a key prefix starting with "/"',
      CONFIG_DEFAULTS.etcdPrefix,
    ),
    etcd_call_timeout_ms: s.integer('etcd_call_timeout_ms', 1, 60_000, CONFIG_DEFAULTS.etcdCallTimeoutMs),
    etcd_username: s.optionalString('etcd_username'),
    etcd_password_file: s.optionalFilePath('etcd_password_file'),
    forward_listen: s.hostPort('forward_listen', { listen: true }),
    forward_advertise: advertise,
    tls_ca_file: s.filePath('tls_ca_file'),
    tls_cert_file: s.filePath('tls_cert_file'),
    tls_key_file: s.filePath('tls_key_file'),
  });
}

function readChain(s: Section): ChainSection {
  s.only(['id', 'key_label', 'key_type', 'protocol', 'max_height_jump', 'validator']);
  const id = s.string('id');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is rejected
  if (id.length > MAX_CHAIN_ID_LEN || /[\u0000-\u001f\u007f]/.test(id)) {
    s.fail('id', `expected at most ${MAX_CHAIN_ID_LEN} printable characters, got ${JSON.stringify(id)}`);
  }
  const validators: ValidatorSection[] = [];
  for (const v of s.tables('validator', 'validator')) {
    v.only(['addr']);
    const addr = v.string('addr');
    if (!checkValidatorAddr(addr)) {
      v.fail('addr', `expected tcp://host:port or unix:///path, got ${JSON.stringify(addr)}`);
    }
    if (validators.some((x) => x.addr === addr))
      v.fail('addr', `duplicate validator address ${JSON.stringify(addr)}`);
    validators.push({ addr });
  }
  return {
    id,
    key_label: s.string('key_label'),
    key_type: s.oneOf('key_type', KEY_TYPES),
    protocol: s.oneOf<ProtocolVersion>('protocol', PROTOCOL_VERSIONS),
    max_height_jump: s.integer('max_height_jump', 1, Number.MAX_SAFE_INTEGER, CONFIG_DEFAULTS.maxHeightJump),
    validators,
  };
}

/**
 * Parses and validates config text. `path` names the file in errors and anchors relative
 * paths; `env` supplies the overrides of ENV_OVERRIDES (pass `{}` to ignore the environment).
 */
export function parseConfig(text: string, path: string, env: NodeJS.ProcessEnv = process.env): Config {
  const file = resolve(path);
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (err) {
    if (err instanceof TomlError) {
      const msg = err.message.split('\n')[0]?.replace(/^Invalid TOML document: /, '');
      throw new ConfigError(`config ${file}: invalid TOML at line ${err.line}, column ${err.column}: ${msg}`);
    }
    throw err;
  }
  const root = new Section(file, dirname(file), '', doc);
  root.only(['node', 'hsm', 'admin', 'cluster', 'chain']);
  const config: Config = {
    path: file,
    node: readNode(root, env),
    hsm: readHsm(root),
    admin: readAdmin(root, env),
    chains: root.tables('chain', 'chain').map(readChain),
  };
  const cluster = readCluster(root);
  if (cluster) config.cluster = cluster;
  const seen = new Map<string, number>();
  config.chains.forEach((c, i) => {
    const first = seen.get(c.id);
    if (first !== undefined) {
      throw new ConfigError(
        `config ${file}: chain[${i}].id: duplicate chain id ${JSON.stringify(c.id)} (also chain[${first}])`,
      );
    }
    seen.set(c.id, i);
  });
  return config;
}

/** Reads and validates a config file (see parseConfig); environment overrides apply. */
export async function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`config ${resolve(path)}: cannot read: ${(err as Error).message}`);
  }
  return parseConfig(text, path, env);
}
