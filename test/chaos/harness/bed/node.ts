/**
 * One CometKMS node of a chaos run: its home, its HSM stack (fault shim → spy → SoftHSM, one spy
 * log per process start), its optional clock (libfaketime) and power-loss layer, and its
 * current process. Only this node's PIDs are ever signalled.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NodeStatus } from '../../../../src/admin/types.ts';
import { STATE_DIR } from '../../../../src/store/file.ts';
import { type KmsHome, KmsProcess, nodeStatus } from '../../../helpers/kms-process.ts';
import { type HsmFaults, hsmStackEnv } from '../hsm/stack.ts';
import { applyDurableImage, durableEnv } from '../state/durable-image.ts';

const FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1';

/** What a node's process is wired to. */
export interface NodeWiring {
  softhsmModule: string;
  spyDir: string;
  /** with libfaketime: the offset file the harness rewrites ("+0", "+300", "-300") */
  clockFile?: string;
  /** the power-loss / disk-full layer over the state directory (sign state, high-water marks) */
  durable?: { image: string; enospcFlag: string };
}

export class ChaosNode {
  proc: KmsProcess | undefined;
  adminUrl: string | undefined;
  paused = false;
  private starts = 0;
  private readonly logWrites: Promise<void>[] = [];

  constructor(
    readonly index: number,
    readonly id: string,
    readonly home: KmsHome,
    readonly hsm: HsmFaults,
    private readonly wiring: NodeWiring,
  ) {}

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitStatus === undefined;
  }

  get stateDir(): string {
    return join(this.home.home, STATE_DIR);
  }

  get clockFile(): string | undefined {
    return this.wiring.clockFile;
  }

  get enospcFlag(): string | undefined {
    return this.wiring.durable?.enospcFlag;
  }

  /**
   * The environment of this node's next process (a fresh spy log each start). `durable: false`
   * leaves out the power-loss layer (a second process must not touch the first one's image).
   */
  private env(opts: { durable: boolean } = { durable: true }): Record<string, string> {
    const env: Record<string, string> = hsmStackEnv({
      softhsmModule: this.wiring.softhsmModule,
      spyLog: join(this.wiring.spyDir, `${this.id}-${++this.starts}.log`),
      controlFile: this.hsm.controlFile,
    });
    if (this.wiring.clockFile !== undefined) {
      Object.assign(env, {
        LD_PRELOAD: FAKETIME_LIB,
        FAKETIME_TIMESTAMP_FILE: this.wiring.clockFile,
        FAKETIME_CACHE_DURATION: '1',
        // Only the wall clock jumps; a monotonic clock never does.
        FAKETIME_DONT_FAKE_MONOTONIC: '1',
      });
    }
    if (this.wiring.durable !== undefined && opts.durable) {
      Object.assign(env, durableEnv({ root: this.stateDir, ...this.wiring.durable }));
    }
    return env;
  }

  /**
   * Starts a process on this home and waits for "ready". Resolves false (and leaves no process)
   * if it exits first, e.g. because it refuses a missing or regressed state.
   */
  async start(timeoutMs = 30_000): Promise<boolean> {
    if (this.running) throw new Error(`${this.id} is already running`);
    this.paused = false;
    this.adminUrl = undefined;
    const proc = this.home.start({ env: this.env() });
    this.proc = proc;
    this.keepLog(proc);
    try {
      this.adminUrl = await proc.waitReady(timeoutMs);
      return true;
    } catch (err) {
      if (proc.exitStatus !== undefined) return false;
      proc.kill('SIGKILL');
      await proc.exited;
      throw err;
    }
  }

  /**
   * A second process on this same home while the first runs (an operator mistake): on the same
   * path, from another network namespace, or through a bind mount of the home at another path
   * (in its own mount namespace). It signs through the same HSM stack with its own spy log, so
   * whatever it signs is witnessed.
   */
  async startSecond(how: 'same-path' | 'netns' | 'bind-mount'): Promise<KmsProcess> {
    const env = this.env({ durable: false });
    let proc: KmsProcess;
    if (how === 'same-path') {
      proc = this.home.start({ env });
    } else if (how === 'netns') {
      proc = KmsProcess.spawn(['start', '--config', this.home.configPath], this.home.env(env), [
        'unshare',
        '--net',
        'sh',
        '-c',
        'ip link set lo up && exec "$0" "$@"',
      ]);
    } else {
      const alias = join(this.home.dir, 'home-alias');
      const aliasConfig = join(this.home.dir, 'config-alias.toml');
      await mkdir(alias, { recursive: true });
      const config = await readFile(this.home.configPath, 'utf8');
      await writeFile(
        aliasConfig,
        config.replace(`home = ${JSON.stringify(this.home.home)}`, `home = ${JSON.stringify(alias)}`),
        {
          mode: 0o600,
        },
      );
      proc = KmsProcess.spawn(
        ['start', '--config', aliasConfig],
        this.home.env({ ...env, CHAOS_HOME: this.home.home, CHAOS_ALIAS: alias }),
        ['unshare', '--mount', 'sh', '-c', 'mount --bind "$CHAOS_HOME" "$CHAOS_ALIAS" && exec "$0" "$@"'],
      );
    }
    this.keepLog(proc);
    return proc;
  }

  /**
   * Once the process has exited: writes its output next to its spy log (for the history), and
   * removes the shared-memory objects libfaketime leaves behind when a process is SIGKILLed.
   */
  private keepLog(proc: KmsProcess): void {
    const file = join(this.wiring.spyDir, `${this.id}-${this.starts}.out`);
    const pid = proc.pid;
    this.logWrites.push(
      proc.exited.then(async () => {
        await writeFile(file, `${proc.lines.join('\n')}\n--- stderr ---\n${proc.stderr}`);
        if (this.wiring.clockFile !== undefined) {
          await rm(`/dev/shm/faketime_shm_${pid}`, { force: true });
          await rm(`/dev/shm/sem.faketime_sem_${pid}`, { force: true });
        }
      }),
    );
  }

  /** Resolves once every exited process's output is written. */
  async logsWritten(): Promise<void> {
    await Promise.all(this.logWrites);
  }

  /** Why the last process exited (its stderr), for the history. */
  get lastStderr(): string {
    return this.proc?.stderr.trim().slice(-500) ?? '';
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.proc;
    if (p === undefined || p.exitStatus !== undefined) return;
    p.kill('SIGCONT');
    this.paused = false;
    p.kill(signal);
    await p.waitExit(20_000).catch(() => undefined);
  }

  pause(): void {
    if (!this.running) return;
    this.proc?.kill('SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    if (!this.running) return;
    this.proc?.kill('SIGCONT');
    this.paused = false;
  }

  /** /status, or undefined when not running, frozen or not answering. */
  async status(): Promise<NodeStatus | undefined> {
    if (!this.running || this.paused || this.adminUrl === undefined) return undefined;
    try {
      return await nodeStatus(this.adminUrl, this.home.adminToken);
    } catch {
      return undefined;
    }
  }

  /** Wall clock offset in seconds for this node's next time reads (libfaketime). */
  async setClockOffset(seconds: number): Promise<void> {
    if (this.wiring.clockFile === undefined) throw new Error(`${this.id} has no fake clock`);
    await writeFile(this.wiring.clockFile, `${seconds >= 0 ? '+' : ''}${seconds}\n`);
  }

  /**
   * Power loss: SIGKILL, then the state directory becomes what the disk durably held.
   * Returns the files that came back different.
   */
  async powerLoss(): Promise<string[]> {
    if (this.wiring.durable === undefined) throw new Error(`${this.id} has no power-loss layer`);
    await this.kill('SIGKILL');
    return await applyDurableImage(this.stateDir, this.wiring.durable.image);
  }
}
