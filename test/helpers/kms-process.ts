/**
 * Real `cometkms start` processes for integration, chaos and bench runs: a temporary home with
 * a config for a SoftHSM token, spawning, readiness (the "ready" log line, which carries the
 * admin URL), signals, restarts. Every process is tracked by PID and killed on cleanup or when
 * the test process exits; nothing else is ever signalled.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NodeStatus } from '../../src/admin/types.ts';
import type { KeyType, ProtocolVersion, PubKey } from '../../src/cometbft/types.ts';
import { openHsm } from '../../src/pkcs11/hsm.ts';
import { loadOrCreateIdentity } from '../../src/privval/identity.ts';
import { FileSignStateStore, STATE_DIR } from '../../src/store/file.ts';
import { freshSignState } from '../../src/store/types.ts';
import { freshCli } from './dist.ts';
import type { SoftHsmToken } from './softhsm.ts';

/** One [[chain]] of the generated config. */
export interface KmsChain {
  id: string;
  keyLabel: string;
  keyType: KeyType;
  protocol: ProtocolVersion;
  /** validator addresses to dial (tcp://127.0.0.1:PORT or unix:///path) */
  validators: string[];
  maxHeightJump?: number;
}

/** Options of {@link KmsHome.create}. */
export interface KmsHomeOptions {
  token: SoftHsmToken;
  chains: KmsChain[];
  nodeId?: string;
  /** `file` (default): hsm.pin_file in the config; `env`: COMETKMS_HSM_PIN in the child's env */
  pinSource?: 'file' | 'env';
  /** the PIN to hand the node (default: the token's) */
  pin?: string;
  /** false: leave the home uninitialised (no home directory at all) */
  initialise?: boolean;
  /** raw TOML appended to the generated config */
  extraToml?: string;
  /**
   * The sign state each chain starts with in the home's file store, as `cometkms state init
   * --height H` creates it (default 0n); `null`: none (a node then refuses to start, or, in
   * cluster mode, the state lives in etcd).
   */
  stateHeight?: bigint | null;
}

/**
 * Generates key pairs in `token` from this process. Sets SOFTHSM2_CONF for the process (SoftHSM
 * reads it once, at its first use), so a test file can use only one token in-process.
 */
export async function generateKeys(
  token: SoftHsmToken,
  keys: Array<{ label: string; type: KeyType }>,
): Promise<Map<string, PubKey>> {
  process.env['SOFTHSM2_CONF'] = token.confPath;
  const hsm = await openHsm({ module: token.modulePath, tokenLabel: token.label });
  try {
    const out = new Map<string, PubKey>();
    for (const k of keys) out.set(k.label, await hsm.generateKey(k.label, k.type, token.pin));
    return out;
  } finally {
    await hsm.close();
  }
}

const str = (s: string): string => JSON.stringify(s);

/** A temporary CometKMS home with config.toml, state dir, transport identity and admin token. */
export class KmsHome {
  private constructor(
    /** temporary directory holding everything (home, config, token file, sockets) */
    readonly dir: string,
    readonly home: string,
    readonly configPath: string,
    readonly adminToken: string,
    readonly opts: KmsHomeOptions,
  ) {}

  static async create(opts: KmsHomeOptions): Promise<KmsHome> {
    const dir = await mkdtemp(join(tmpdir(), 'cometkms-node-'));
    try {
      const home = join(dir, 'home');
      if (opts.initialise ?? true) {
        await mkdir(join(home, STATE_DIR), { recursive: true, mode: 0o700 });
        await loadOrCreateIdentity(home);
      }
      const adminToken = randomBytes(16).toString('hex');
      const tokenFile = join(dir, 'admin.token');
      await writeFile(tokenFile, `${adminToken}\n`, { mode: 0o600 });
      let pinLine = '';
      if ((opts.pinSource ?? 'file') === 'file') {
        const pinFile = join(dir, 'hsm.pin');
        await writeFile(pinFile, `${opts.pin ?? opts.token.pin}\n`, { mode: 0o600 });
        pinLine = `pin_file = ${str(pinFile)}\n`;
      }
      const chains = opts.chains
        .map((c) => {
          const lines = [
            '[[chain]]',
            `id = ${str(c.id)}`,
            `key_label = ${str(c.keyLabel)}`,
            `key_type = ${str(c.keyType)}`,
            `protocol = ${str(c.protocol)}`,
          ];
          if (c.maxHeightJump !== undefined) lines.push(`max_height_jump = ${c.maxHeightJump}`);
          for (const v of c.validators) lines.push('[[chain.validator]]', `addr = ${str(v)}`);
          return lines.join('\n');
        })
        .join('\n\n');
      const config =
        `[node]\nid = ${str(opts.nodeId ?? 'kms-test')}\nhome = ${str(home)}\n\n` +
        `[hsm]\nmodule = ${str(opts.token.modulePath)}\nprofile = "softhsm2"\n` +
        `token_label = ${str(opts.token.label)}\n${pinLine}\n` +
        `[admin]\nlisten = "127.0.0.1:0"\ntoken_file = ${str(tokenFile)}\n\n` +
        `${chains}\n${opts.extraToml ?? ''}`;
      const configPath = join(dir, 'config.toml');
      await writeFile(configPath, config, { mode: 0o600 });
      const stateHeight = opts.stateHeight === undefined ? 0n : opts.stateHeight;
      if (stateHeight !== null && (opts.initialise ?? true)) {
        const store = await FileSignStateStore.open(home);
        try {
          for (const c of opts.chains) await store.initialize(c.id, freshSignState(stateHeight));
        } finally {
          await store.close();
        }
      }
      return new KmsHome(dir, home, configPath, adminToken, opts);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** The environment of a node of this home: SoftHSM config, PIN when from env, nothing inherited that could reconfigure it. */
  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) {
      // The node must see only what the test gives it (no stray COMETKMS_* or NODE_ENV).
      if (!k.startsWith('COMETKMS_') && k !== 'NODE_ENV' && k !== 'SOFTHSM2_CONF') env[k] = v;
    }
    Object.assign(env, this.opts.token.env);
    if (this.opts.pinSource === 'env') env['COMETKMS_HSM_PIN'] = this.opts.pin ?? this.opts.token.pin;
    return Object.assign(env, extra);
  }

  /** Spawns `cometkms start --config <this home's config>`. */
  start(opts: { args?: string[]; env?: Record<string, string> } = {}): KmsProcess {
    return KmsProcess.spawn(['start', '--config', this.configPath, ...(opts.args ?? [])], this.env(opts.env));
  }

  /** Removes the temporary directory (stop every process of this home first). */
  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** How a process ended. */
export interface KmsExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Every process spawned here that has not exited yet, by PID. */
const live = new Map<number, ChildProcess>();

// A test that fails or times out must not leave nodes behind holding ports, sockets and homes.
process.on('exit', () => {
  for (const child of live.values()) child.kill('SIGKILL');
});

/** SIGKILLs every process this helper started that is still running (by PID, nothing else). */
export async function killAllKms(): Promise<void> {
  const waits = [...live.values()].map(
    (child) => new Promise<void>((resolve) => child.once('exit', () => resolve())),
  );
  for (const child of live.values()) child.kill('SIGKILL');
  await Promise.all(waits);
}

/** One `cometkms` child process, its output and its exit. */
export class KmsProcess {
  /** stdout lines (JSON log lines for `start`) */
  readonly lines: string[] = [];
  private stderrText = '';
  readonly exited: Promise<KmsExit>;
  private exit: KmsExit | undefined;
  private readonly lineWaiters = new Set<() => void>();

  private constructor(private readonly child: ChildProcess) {
    const pid = child.pid;
    if (pid === undefined) throw new Error('cometkms could not be spawned');
    live.set(pid, child);
    let partial = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      this.lines.push(...parts);
      for (const wake of this.lineWaiters) wake();
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrText += chunk;
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        live.delete(pid);
        this.exit = { code, signal };
        for (const wake of this.lineWaiters) wake();
        resolve(this.exit);
      });
    });
  }

  /**
   * Spawns `node bin/cometkms.js ...args` with exactly `env` (from a dist/ built from the current
   * src/, or the copy of the command given as `cli`); with `wrapper` (e.g. `['unshare', '-n']`),
   * as `wrapper... node bin/cometkms.js ...args`.
   */
  static spawn(args: string[], env: NodeJS.ProcessEnv, wrapper: string[] = [], cli = freshCli()): KmsProcess {
    const [command, ...prefix] = [...wrapper, process.execPath];
    return new KmsProcess(
      spawn(command as string, [...prefix, cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }),
    );
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get stderr(): string {
    return this.stderrText;
  }

  /**
   * The message of the fatal log line a `start` that cannot start writes (on stdout, like every
   * log line) before it exits; undefined if there is none.
   */
  get fatal(): string | undefined {
    const line = this.logs().find((r) => r['level'] === 60);
    return line === undefined ? undefined : String(line['msg']);
  }

  /** How it ended, or undefined while it runs. */
  get exitStatus(): KmsExit | undefined {
    return this.exit;
  }

  /** The stdout lines that are JSON objects (pino log records). */
  logs(): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = [];
    for (const line of this.lines) {
      try {
        const v: unknown = JSON.parse(line);
        if (v !== null && typeof v === 'object') out.push(v as Record<string, unknown>);
      } catch {
        // not a log record
      }
    }
    return out;
  }

  /**
   * Resolves with the first log record `match` accepts; rejects when the process exits first
   * or after `timeoutMs`.
   */
  async waitForLog(
    match: (record: Record<string, unknown>) => boolean,
    timeoutMs: number,
  ): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      const records = this.logs();
      for (; seen < records.length; seen++) if (match(records[seen]!)) return records[seen]!;
      if (this.exit) {
        throw new Error(
          `cometkms (pid ${this.pid}) exited (code ${this.exit.code}, signal ${this.exit.signal}) ` +
            `before the expected log line; fatal: ${this.fatal ?? 'none'}; stderr: ${this.stderrText.trim()}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`cometkms (pid ${this.pid}): no expected log line within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          clearTimeout(timer);
          this.lineWaiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.lineWaiters.add(wake);
      });
    }
  }

  /** Waits for the "ready" log line and returns the admin URL it carries. */
  async waitReady(timeoutMs = 30_000): Promise<string> {
    const ready = await this.waitForLog((r) => r['msg'] === 'ready', timeoutMs);
    const admin = ready['admin'];
    if (typeof admin !== 'string') throw new Error('the ready log line carries no admin URL');
    return admin;
  }

  /** Sends `signal` if the process still runs. */
  kill(signal: NodeJS.Signals): void {
    if (this.exit === undefined) this.child.kill(signal);
  }

  /** Resolves with the exit; SIGKILLs the process if it has not exited within `timeoutMs`. */
  async waitExit(timeoutMs: number): Promise<KmsExit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (result !== 'timeout') return result;
    this.kill('SIGKILL');
    await this.exited;
    // Its last lines say which shutdown step it was stuck in.
    const last = this.logs()
      .slice(-12)
      .map((l) => `${String(l['time'] ?? '')} ${String(l['msg'] ?? '')}`)
      .join('\n  ');
    throw new Error(
      `cometkms (pid ${this.pid}) did not exit within ${timeoutMs} ms; killed. Last log lines:\n  ${last}`,
    );
  }
}

/** GETs `path` of a node's admin API with its bearer token; returns status and parsed body. */
export async function adminGet(
  adminUrl: string,
  path: string,
  token?: string,
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(new URL(path, adminUrl), {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON (e.g. /metrics)
  }
  return { status: res.status, body };
}

/** The node's `/status`. */
export async function nodeStatus(adminUrl: string, token: string): Promise<NodeStatus> {
  const { status, body } = await adminGet(adminUrl, '/status', token);
  if (status !== 200) throw new Error(`/status answered ${status}: ${JSON.stringify(body)}`);
  return body as NodeStatus;
}

/** Runs `cometkms ...args` to completion (bounded) and returns its exit and output. */
export async function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 30_000,
): Promise<KmsExit & { stdout: string; stderr: string }> {
  const p = KmsProcess.spawn(args, env);
  const exit = await p.waitExit(timeoutMs);
  return { ...exit, stdout: p.lines.join('\n'), stderr: p.stderr };
}
