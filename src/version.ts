/**
 * The version of this CometKMS build, from the package.json it ships with. Found by walking up
 * from this module, so it is the same whether the code runs from src/ (tests) or dist/src/.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function readVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'cometkms' && typeof pkg.version === 'string') return pkg.version;
    }
    dir = dirname(dir);
  }
  throw new Error('cannot find the package.json of cometkms to read its version');
}

/** e.g. "0.2.0" */
export const VERSION: string = readVersion();
