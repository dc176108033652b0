/**
 * One CometKMS node of the demo: a real `cometkms start --config FILE` child process, its
 * readiness (the "ready" log line carries the admin URL) and its `/status`.
 */
import type { NodeStatus } from '../../admin/types.ts';
import type { ChildProcesses, TrackedChild } from './children.ts';
import { CLI_PATH, type NodeSetup } from './workspace.ts';

/** How long a node may take from spawn to "ready" (tsx load, HSM, etcd, election). */
const READY_WITHIN_MS = 30_000;
/** A status poll must not hold up the once-a-second live view. */
const STATUS_TIMEOUT_MS = 800;

/** A demo node; `start()` may be called again after it was killed (single-node restart). */
export class KmsNode {
  private child: TrackedChild | undefined;
  private adminUrl: string | undefined;
  private readyWaiter: ((url: string) => void) | undefined;
  /** the last /status that answered, kept after the node dies */
  lastStatus: NodeStatus | undefined;
  killed = false;

  constructor(
    readonly setup: NodeSetup,
    private readonly children: ChildProcesses,
  ) {}

  get id(): string {
    return this.setup.nodeId;
  }

  /** PID of the current process (undefined before start). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child?.running === true;
  }

  /** Spawns the node and resolves with its admin URL once it logs "ready". */
  async start(signal: AbortSignal): Promise<string> {
    this.adminUrl = undefined;
    this.killed = false;
    const ready = new Promise<string>((resolve) => {
      this.readyWaiter = resolve;
    });
    const child = this.children.spawn(
      this.id,
      process.execPath,
      [CLI_PATH, 'start', '--config', this.setup.configPath],
      { env: this.setup.env, logFile: this.setup.logFile, onLine: (line) => this.onLine(line) },
    );
    this.child = child;
    let timer: NodeJS.Timeout | undefined;
    let onAbort = (): void => {};
    const failed = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(`${this.id} was not ready within ${READY_WITHIN_MS} ms (log: ${this.setup.logFile})`),
          ),
        READY_WITHIN_MS,
      );
      child.exited.then((exit) =>
        reject(
          new Error(
            `${this.id} exited before it was ready (code ${exit.code}, signal ${exit.signal}): ` +
              `${child.stderr.trim() || `see ${this.setup.logFile}`}`,
          ),
        ),
      );
      onAbort = () => reject(signal.reason);
      if (signal.aborted) onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([ready, failed]);
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      failed.catch(() => undefined);
    }
  }

  /** SIGKILLs the node (no shutdown, no hand-over: a crash) and waits until it is gone. */
  async crash(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.killed = true;
    child.kill('SIGKILL');
    await child.exited;
  }

  /** Fetches `/status`; undefined when the node is down or does not answer in time. */
  async status(): Promise<NodeStatus | undefined> {
    if (this.adminUrl === undefined || !this.running) return undefined;
    try {
      const res = await fetch(new URL('/status', this.adminUrl), {
        headers: { authorization: `Bearer ${this.setup.adminToken}` },
        signal: AbortSignal.timeout(STATUS_TIMEOUT_MS),
      });
      if (res.status !== 200) return undefined;
      this.lastStatus = (await res.json()) as NodeStatus;
      return this.lastStatus;
    } catch {
      return undefined;
    }
  }

  private onLine(line: string): void {
    if (this.adminUrl !== undefined || !line.includes('"ready"')) return;
    try {
      const rec = JSON.parse(line) as { msg?: unknown; admin?: unknown };
      if (rec.msg === 'ready' && typeof rec.admin === 'string') {
        this.adminUrl = rec.admin;
        this.readyWaiter?.(rec.admin);
      }
    } catch {
      // not a log record
    }
  }
}
