import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Creates or replaces `path` with `data` so that after a crash the file holds either the old or
 * the new content, never a mix: write a temp file in the same directory → fsync it → rename over
 * `path` → fsync the directory (without the last step the rename itself may be lost).
 *
 * Synchronous on purpose: every async fs call is a thread-pool round trip, and these calls are
 * few and short. The sign-state log (file.ts) uses this only to create files; its hot path is one
 * pwrite and one fdatasync.
 */
export function writeFileDurable(path: string, data: string | Uint8Array, mode = 0o600): void {
  const dir = dirname(path);
  const tmp = tempPath(path);
  const fd = openSync(tmp, 'wx', mode);
  try {
    try {
      const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
      writeAll(fd, bytes, 0);
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

/** A fresh temp file name next to `path` (`.<name>.tmp-<pid>-<random>`). */
export function tempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** Writes all of `bytes` at `position` (pwrite can write less than asked). */
export function writeAll(fd: number, bytes: Uint8Array, position: number, length = bytes.length): void {
  let written = 0;
  while (written < length) written += writeSync(fd, bytes, written, length - written, position + written);
}

/** fsyncs a directory so that renames, creations and removals inside it are durable. */
export function fsyncDir(dir: string): void {
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

/** The file's bytes, or `undefined` if it does not exist (any other error is thrown). */
export function readBytesIfExists(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
