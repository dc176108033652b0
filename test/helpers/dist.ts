/**
 * Tests that spawn `cometkms` run the compiled dist/ (bin/cometkms.js). scripts/run-tests.sh
 * rebuilds it before the integration and chaos tiers; a test file run on its own
 * (`node --import tsx --test test/integration/...`) gets this check instead, so that a build
 * older than the sources is never silently what a test exercises.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** bin/cometkms.js, the command the tests run. */
export const CLI = join(ROOT, 'bin', 'cometkms.js');

let checked = false;

/** {@link CLI}, after checking that dist/ is fresh (see {@link assertDistFresh}). */
export function freshCli(): string {
  assertDistFresh();
  return CLI;
}

/** Throws unless dist/ exists and every file in it is newer than every source it is built from. */
export function assertDistFresh(): void {
  if (checked) return;
  const built = mtimes(join(ROOT, 'dist'), '.js');
  if (built.length === 0) throw new Error('dist/ is missing: run `npm run build` first');
  const sources = [
    ...mtimes(join(ROOT, 'src'), '.ts'),
    ...['package.json', 'tsconfig.json', 'tsconfig.build.json'].map((f) => statSync(join(ROOT, f)).mtimeMs),
  ];
  if (Math.max(...sources) > Math.min(...built)) {
    throw new Error('dist/ is older than src/: run `npm run build` (scripts/run-tests.sh does it for you)');
  }
  checked = true;
}

/** Modification times of every file ending in `ext` under `dir` (none if `dir` does not exist). */
function mtimes(dir: string, ext: string): number[] {
  let entries: string[];
  try {
    entries = readdirSync(dir, { recursive: true, encoding: 'utf8' });
  } catch {
    return [];
  }
  return entries.filter((e) => e.endsWith(ext)).map((e) => statSync(join(dir, e)).mtimeMs);
}
