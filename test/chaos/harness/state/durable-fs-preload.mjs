/**
 * TEST-ONLY preload (`NODE_OPTIONS=--import=<this file>`) that lets the chaos harness simulate
 * power loss and a full disk for one directory tree (CHAOS_DURABLE_ROOT), whatever writes to it.
 *
 * Power loss. SIGKILL keeps the page cache, so it cannot show a missing fsync. This module keeps
 * beside the real files a "durable image" (CHAOS_DURABLE_IMAGE) of what a disk would still hold
 * after the power went out, by the POSIX rules:
 *   - a file's content becomes durable when fsync/fdatasync of a descriptor of it RETURNS
 *     (recorded after the real call: the program can rely on it only from then on);
 *   - directory entries (creations, renames, unlinks) become durable when the directory itself
 *     is fsynced.
 * Files are tracked by inode, so a rename keeps its durable content. At the crash point the
 * harness SIGKILLs the process and rebuilds the tree from the image (durable-image.ts): an entry
 * whose directory was synced but whose content never was comes back empty. Everything present
 * when the process started counts as durable.
 *
 * Full disk. While the file CHAOS_DURABLE_ENOSPC exists, every write into the tree fails with
 * ENOSPC, as on a full filesystem.
 *
 * Generic over paths, descriptors and directories: it knows nothing of CometKMS's file layout.
 * Plain JavaScript so it runs in front of any build of the CLI.
 */
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join, relative, sep } from 'node:path';

const root = process.env.CHAOS_DURABLE_ROOT;
const image = process.env.CHAOS_DURABLE_IMAGE;
const enospcFlag = process.env.CHAOS_DURABLE_ENOSPC;

const real = {
  fsyncSync: fs.fsyncSync,
  fdatasyncSync: fs.fdatasyncSync,
  fsync: fs.fsync,
  fdatasync: fs.fdatasync,
  writeSync: fs.writeSync,
  write: fs.write,
  writeFileSync: fs.writeFileSync,
  promisesWriteFile: fs.promises.writeFile,
  readlinkSync: fs.readlinkSync,
  readdirSync: fs.readdirSync,
  statSync: fs.statSync,
  fstatSync: fs.fstatSync,
  readFileSync: fs.readFileSync,
  renameSync: fs.renameSync,
  existsSync: fs.existsSync,
  mkdirSync: fs.mkdirSync,
};

/** Relative path inside the root, or undefined outside it. */
function inside(path) {
  if (root === undefined || typeof path !== 'string') return undefined;
  const rel = relative(root, path);
  if (rel === '') return '.';
  if (rel.startsWith('..') || rel.startsWith(sep)) return undefined;
  return rel;
}

function fdPath(fd) {
  try {
    return real.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

/** Writes `data` to `file` in the image atomically (the process may be killed at any point). */
function imageWrite(file, data) {
  const tmp = `${file}.tmp-${process.pid}`;
  real.writeFileSync(tmp, data);
  real.renameSync(tmp, file);
}

const dirKey = (rel) => Buffer.from(rel).toString('hex');

function commitDir(rel) {
  const listing = {};
  for (const e of real.readdirSync(join(root, rel), { withFileTypes: true })) {
    if (e.isDirectory()) listing[e.name] = { dir: true };
    else if (e.isFile()) listing[e.name] = { ino: String(real.statSync(join(root, rel, e.name)).ino) };
  }
  imageWrite(join(image, 'dirs', `${dirKey(rel)}.json`), JSON.stringify(listing));
}

function commitFile(fd) {
  const st = real.fstatSync(fd);
  imageWrite(join(image, 'inodes', String(st.ino)), real.readFileSync(`/proc/self/fd/${fd}`));
}

/** Records what a completed fsync of `fd` made durable. */
function synced(fd) {
  if (image === undefined) return;
  const rel = inside(fdPath(fd));
  if (rel === undefined) return;
  if (real.fstatSync(fd).isDirectory()) commitDir(rel);
  else commitFile(fd);
}

/** At start everything present is durable: snapshot the whole tree. */
function snapshot(rel) {
  commitDir(rel);
  for (const e of real.readdirSync(join(root, rel), { withFileTypes: true })) {
    const p = join(rel, e.name);
    if (e.isDirectory()) snapshot(p);
    else if (e.isFile()) {
      const full = join(root, p);
      imageWrite(join(image, 'inodes', String(real.statSync(full).ino)), real.readFileSync(full));
    }
  }
}

function enospc(syscall) {
  const err = new Error(`ENOSPC: no space left on device, ${syscall}`);
  err.code = 'ENOSPC';
  err.errno = -28;
  err.syscall = syscall;
  return err;
}

const full = () => enospcFlag !== undefined && real.existsSync(enospcFlag);
const fdInside = (fd) => typeof fd === 'number' && inside(fdPath(fd)) !== undefined;
const pathInside = (p) =>
  inside(typeof p === 'string' ? p : p instanceof URL ? p.pathname : undefined) !== undefined;

if (root !== undefined) {
  if (image !== undefined) {
    // A fresh image per process: inode numbers of an earlier run may since have been reused.
    fs.rmSync(image, { recursive: true, force: true });
    real.mkdirSync(join(image, 'dirs'), { recursive: true });
    real.mkdirSync(join(image, 'inodes'), { recursive: true });
    snapshot('.');
  }
  fs.fsyncSync = (fd) => {
    real.fsyncSync(fd);
    synced(fd);
  };
  fs.fdatasyncSync = (fd) => {
    real.fdatasyncSync(fd);
    synced(fd);
  };
  const wrapCallback = (fn) => (fd, cb) =>
    fn(fd, (err) => {
      if (!err) synced(fd);
      cb(err);
    });
  fs.fsync = wrapCallback(real.fsync);
  fs.fdatasync = wrapCallback(real.fdatasync);
  fs.writeSync = (fd, ...rest) => {
    if (full() && fdInside(fd)) throw enospc('write');
    return real.writeSync(fd, ...rest);
  };
  fs.write = (fd, ...rest) => {
    if (full() && fdInside(fd)) {
      const cb = rest[rest.length - 1];
      process.nextTick(() => cb(enospc('write')));
      return;
    }
    return real.write(fd, ...rest);
  };
  fs.writeFileSync = (file, ...rest) => {
    if (full() && (pathInside(file) || fdInside(file))) throw enospc('write');
    return real.writeFileSync(file, ...rest);
  };
  fs.promises.writeFile = async (file, ...rest) => {
    if (full() && pathInside(file)) throw enospc('write');
    return real.promisesWriteFile(file, ...rest);
  };
  // FileHandle (fs/promises open()): sync, datasync and writes go through its prototype.
  const probe = await fs.promises.open('/dev/null', 'r');
  const proto = Object.getPrototypeOf(probe);
  await probe.close();
  const realSync = proto.sync;
  const realDatasync = proto.datasync;
  const realWrite = proto.write;
  proto.sync = async function sync() {
    await realSync.call(this);
    synced(this.fd);
  };
  proto.datasync = async function datasync() {
    await realDatasync.call(this);
    synced(this.fd);
  };
  proto.write = async function write(...args) {
    if (full() && fdInside(this.fd)) throw enospc('write');
    return realWrite.apply(this, args);
  };
  syncBuiltinESMExports();
}
