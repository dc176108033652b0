import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Replaces `path` with `data` so that after a crash the file holds either the old or the new
 * content, never a mix: write a temp file in the same directory → fsync it → rename over
 * `path` → fsync the directory (without the last step the rename itself may be lost).
 *
 * The system calls are synchronous on purpose. This sits on the signing hot path (every
 * reservation), and each async fs call is a separate thread-pool round trip: eight of them per
 * file cost several times the fsyncs themselves. This blocks the whole event loop (every chain,
 * the admin API, pings) for the ~0.5 ms of a durable write on a healthy disk; that is cheaper
 * than the round trips, and a disk slow enough to matter would stall signing either way.
 */
export async function writeFileDurable(path: string, data: string, mode = 0o600): Promise<void> {
  writeFileDurableSync(path, data, mode);
}

/** {@link writeFileDurable}, for a caller that must not yield before the file is durable. */
export function writeFileDurableSync(path: string, data: string, mode = 0o600): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fd = openSync(tmp, 'wx', mode);
  try {
    try {
      const bytes = Buffer.from(data, 'utf8');
      let written = 0;
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(dir);
}

/** fsyncs a directory so that renames and creations inside it are durable. */
function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The file's text, or `undefined` if it does not exist (any other error is thrown). */
export async function readFileIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
