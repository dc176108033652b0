/**
 * The demo's child processes: every process it starts is tracked here by PID, so that all of
 * them can be stopped at the end, on Ctrl-C or on an error — and killed synchronously if the
 * demo process exits any other way. Nothing but these PIDs is ever signalled.
 *
 * Children run in their own process group (`detached`): a terminal's Ctrl-C then reaches only
 * the demo, which stops the nodes itself in a known order instead of having every process
 * react to the same signal at once.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';

/** How a child ended. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Options of {@link ChildProcesses.spawn}. */
export interface SpawnOptions {
  env: NodeJS.ProcessEnv;
  /** append stdout and stderr here */
  logFile?: string;
  /** called with each complete stdout line */
  onLine?: (line: string) => void;
}

/** One tracked child. */
export class TrackedChild {
  readonly exited: Promise<ChildExit>;
  private exit: ChildExit | undefined;
  private stdoutText = '';
  private stderrTail = '';

  constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    opts: SpawnOptions,
  ) {
    const log = opts.logFile === undefined ? undefined : createWriteStream(opts.logFile, { flags: 'a' });
    let partial = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      log?.write(chunk);
      this.stdoutText = (this.stdoutText + chunk).slice(-64_000);
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) opts.onLine?.(line);
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      log?.write(chunk);
      this.stderrTail = (this.stderrTail + chunk).slice(-4_000);
    });
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.exit = { code, signal };
        log?.end();
        resolve(this.exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.exit === undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last stdout (up to 64 kB) and stderr (up to 4 kB) it wrote. */
  get stdout(): string {
    return this.stdoutText;
  }
  get stderr(): string {
    return this.stderrTail;
  }

  /** Sends `signal` if the process still runs. */
  kill(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  /** Resolves with the exit, or with undefined if it still runs after `ms`. */
  async exitWithin(ms: number): Promise<ChildExit | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    });
    const first = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    return first;
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves once it has exited. */
  async stop(graceMs: number): Promise<ChildExit> {
    this.kill('SIGTERM');
    const exit = await this.exitWithin(graceMs);
    if (exit !== undefined) return exit;
    this.kill('SIGKILL');
    return await this.exited;
  }
}

/** Every child the demo started, alive or not. */
export class ChildProcesses {
  private readonly all: TrackedChild[] = [];
  private readonly exitHook = (): void => this.killAllSync();

  constructor() {
    // The last line of defence: whatever ends the demo, no child outlives it.
    process.on('exit', this.exitHook);
  }

  /** Starts `command args` as a tracked child in its own process group. */
  spawn(name: string, command: string, args: string[], opts: SpawnOptions): TrackedChild {
    const child = spawn(command, args, {
      env: opts.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    if (child.pid === undefined) throw new Error(`cannot start ${name} (${command})`);
    const tracked = new TrackedChild(name, child, opts);
    this.all.push(tracked);
    return tracked;
  }

  /**
   * Runs `command args` to completion (at most `timeoutMs`) and returns its stdout; throws with
   * its stderr when it fails.
   */
  async run(
    name: string,
    command: string,
    args: string[],
    env: NodeJS.ProcessEnv,
    timeoutMs: number,
  ): Promise<string> {
    const child = this.spawn(name, command, args, { env });
    const exit = await child.exitWithin(timeoutMs);
    if (exit === undefined) {
      await child.stop(1_000);
      throw new Error(`${name} did not finish within ${timeoutMs} ms`);
    }
    if (exit.code !== 0) {
      const why = exit.signal === null ? `exit code ${exit.code}` : `signal ${exit.signal}`;
      throw new Error(`${name} failed (${why}): ${child.stderr.trim() || child.stdout.trim()}`);
    }
    return child.stdout;
  }

  /** PIDs of every child ever started, in order. */
  pids(): number[] {
    return this.all.map((c) => c.pid);
  }

  /** PIDs of the children still running. */
  livePids(): number[] {
    return this.all.filter((c) => c.running).map((c) => c.pid);
  }

  /** Stops every running child (SIGTERM, then SIGKILL after `graceMs`) and waits for all. */
  async stopAll(graceMs: number): Promise<void> {
    await Promise.all(this.all.filter((c) => c.running).map((c) => c.stop(graceMs)));
  }

  /** SIGKILLs every running child without waiting (for process exit and a second Ctrl-C). */
  killAllSync(): void {
    for (const c of this.all) c.kill('SIGKILL');
  }

  /** Removes the exit hook; call after {@link stopAll} has finished. */
  dispose(): void {
    process.off('exit', this.exitHook);
  }
}
