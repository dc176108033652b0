/**
 * The exclusive lock on a CometKMS home: two processes on one home would each believe they own
 * the sign state, which is exactly how a double sign happens.
 *
 * The lock is a kernel flock(2) on `<home>/cometkms.lock`, taken through a tiny native helper
 * (native/flock.c; Node.js has no flock). It belongs to the lock file's inode, so it holds for a
 * second process that reaches the home through a bind mount, a symlink, another mount or network
 * namespace (two containers on one volume), and the kernel frees it when the holder dies in any
 * way, SIGKILL included, so a crash never leaves a stale lock. The holder writes its pid into the
 * file for the error message of the next one. The file itself is never deleted: removing a lock
 * file lets a third process lock a new inode while the second still holds the old one.
 * (A lock over NFS depends on the server's lock manager; homes belong on local disks.)
 */
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { tryLockExclusive } from './flock.ts';

/** A held home lock. */
export interface HomeLock {
  /** the home's resolved path */
  readonly home: string;
  /** Releases the lock. Idempotent. */
  release(): Promise<void>;
}

/** Name of the lock file in a home (it also holds the holder's pid). */
export const LOCK_FILE = 'cometkms.lock';

/** Takes the exclusive lock on `home` (which must exist) or throws if another process holds it. */
export async function acquireHomeLock(home: string): Promise<HomeLock> {
  const real = await realpath(home);
  const path = join(real, LOCK_FILE);
  const fd = openSync(path, 'a+', 0o600);
  let locked = false;
  try {
    locked = tryLockExclusive(fd);
    if (!locked) {
      const pid = readPid(path);
      throw new Error(
        `home ${real} is in use by another cometkms process (pid ${pid ?? 'unknown'}): it holds ` +
          `the lock on ${path} (one process per home, also through bind mounts and other namespaces)`,
      );
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  return new FlockHomeLock(real, fd);
}

class FlockHomeLock implements HomeLock {
  private released = false;

  constructor(
    readonly home: string,
    private readonly fd: number,
  ) {}

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    // Clear the pid while still holding the lock, so the file never names a process that is gone
    // while a new holder has already written its own; closing the descriptor releases the lock.
    ftruncateSync(this.fd, 0);
    closeSync(this.fd);
  }
}

function readPid(path: string): number | undefined {
  try {
    const n = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isSafeInteger(n) ? n : undefined;
  } catch {
    return undefined;
  }
}
