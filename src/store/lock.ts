/**
 * The exclusive lock on a CometKMS home: two processes on one home would each believe they own
 * the sign state, which is exactly how a double sign happens.
 *
 * Node has no flock(2). A listening socket in Linux's abstract namespace does the same job: the
 * name is unique per network namespace, a second listen fails with EADDRINUSE, and the kernel
 * frees it when the process exits in any way, SIGKILL included, so a crash never leaves a stale
 * lock behind (unlike a pid file). The pid file is written for operators only.
 */
import { createHash } from 'node:crypto';
import { readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';

/** A held home lock. */
export interface HomeLock {
  /** the home's resolved path */
  readonly home: string;
  /** Releases the lock and removes the pid file. Idempotent. */
  release(): Promise<void>;
}

/** Name of the informational pid file in a home. */
export const PID_FILE = 'cometkms.pid';

/** Takes the exclusive lock on `home` (which must exist) or throws if another process holds it. */
export async function acquireHomeLock(home: string): Promise<HomeLock> {
  const real = await realpath(home);
  const name = `\0cometkms-lock-${createHash('sha256').update(real).digest('hex')}`;
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(name, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      const pid = await readPid(join(real, PID_FILE));
      throw new Error(`home ${real} is in use by another cometkms process (pid ${pid ?? 'unknown'})`);
    }
    throw err;
  }
  // The lock must not keep a short-lived command alive; a node is kept alive by its other work.
  server.unref();
  const pidFile = join(real, PID_FILE);
  await writeFile(pidFile, `${process.pid}\n`, { mode: 0o644 });
  return new FileHomeLock(real, server, pidFile);
}

class FileHomeLock implements HomeLock {
  private released = false;

  constructor(
    readonly home: string,
    private readonly server: Server,
    private readonly pidFile: string,
  ) {}

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    // Remove the pid file while still holding the lock, so it never names a process that is gone
    // while a new holder has already written its own.
    if ((await readPid(this.pidFile)) === process.pid) await rm(this.pidFile, { force: true });
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function readPid(path: string): Promise<number | undefined> {
  try {
    const n = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isSafeInteger(n) ? n : undefined;
  } catch {
    return undefined;
  }
}
