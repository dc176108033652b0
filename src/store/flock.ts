/**
 * Loads the native flock helper (native/flock.c, built by `npm ci` through node-gyp). It is found
 * by walking up from this module, so the same code works from src/ and from a compiled dist/.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface FlockAddon {
  tryLockExclusive(fd: number): boolean;
}

const ADDON = join('native', 'build', 'Release', 'cometkms_flock.node');

function loadAddon(): FlockAddon {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, ADDON);
    if (existsSync(candidate)) return createRequire(import.meta.url)(candidate) as FlockAddon;
    dir = dirname(dir);
  }
  throw new Error(
    `the native flock helper (${ADDON}) is not built: run \`npm ci\` (or \`npm run install\`), which compiles it with node-gyp`,
  );
}

let addon: FlockAddon | undefined;

/**
 * flock(fd, LOCK_EX | LOCK_NB): true when this process now holds the lock, false when another
 * open file description holds it; throws on any other failure.
 */
export function tryLockExclusive(fd: number): boolean {
  addon ??= loadAddon();
  return addon.tryLockExclusive(fd);
}
