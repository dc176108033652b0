/**
 * The harness side of the power-loss preload (durable-fs-preload.mjs): the environment that
 * arms it for one directory tree, and the "power comes back" step that replaces the tree with
 * what the durable image says a disk would still hold.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DURABLE_PRELOAD = fileURLToPath(new URL('./durable-fs-preload.mjs', import.meta.url));

/** The environment that loads the preload in a child and points it at `root`. */
export function durableEnv(opts: {
  root: string;
  image: string;
  enospcFlag: string;
}): Record<string, string> {
  return {
    NODE_OPTIONS: `--import=${DURABLE_PRELOAD}`,
    CHAOS_DURABLE_ROOT: opts.root,
    CHAOS_DURABLE_IMAGE: opts.image,
    CHAOS_DURABLE_ENOSPC: opts.enospcFlag,
  };
}

type Listing = Record<string, { dir: true } | { ino: string }>;

const dirKey = (rel: string): string => Buffer.from(rel).toString('hex');

/**
 * Power loss: replaces the tree at `root` (its writer must be dead) with the durable image in
 * `image`. A file whose directory entry is durable but whose content never was comes back
 * empty. Returns the relative paths that came back different from what was on "disk".
 */
export async function applyDurableImage(root: string, image: string): Promise<string[]> {
  const changed: string[] = [];
  const rebuild = async (rel: string): Promise<void> => {
    const listingFile = join(image, 'dirs', `${dirKey(rel)}.json`);
    const listing: Listing = existsSync(listingFile)
      ? (JSON.parse(await readFile(listingFile, 'utf8')) as Listing)
      : {};
    const dir = join(root, rel);
    for (const name of await readdir(dir)) {
      if (!(name in listing)) {
        changed.push(join(rel, name));
        await rm(join(dir, name), { recursive: true, force: true });
      }
    }
    for (const [name, entry] of Object.entries(listing)) {
      const path = join(dir, name);
      if ('dir' in entry) {
        await mkdir(path, { recursive: true });
        await rebuild(join(rel, name));
        continue;
      }
      const inodeFile = join(image, 'inodes', entry.ino);
      const durable = existsSync(inodeFile) ? await readFile(inodeFile) : Buffer.alloc(0);
      const now = existsSync(path) ? await readFile(path).catch(() => undefined) : undefined;
      if (now === undefined || !now.equals(durable)) {
        changed.push(join(rel, name));
        await rm(path, { recursive: true, force: true });
        await writeFile(path, durable, { mode: 0o600 });
      }
    }
  };
  await rebuild('.');
  await rm(image, { recursive: true, force: true });
  return changed;
}
