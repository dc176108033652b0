#!/usr/bin/env node
// Entry point of the `cometkms` command: runs the compiled JavaScript in dist/, which
// `npm run build` writes (`npm ci` runs it through the `prepare` script; a packaged install
// ships it). Nothing is compiled at run time.
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/cli/main.js', import.meta.url);
let main;
try {
  ({ main } = await import(entry.href));
} catch (err) {
  if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !String(err.message).includes(fileURLToPath(entry))) throw err;
  process.stderr.write(
    'cometkms: dist/ is missing: run `npm run build` (npm ci runs it) in the package directory\n',
  );
  process.exit(1);
}
await main(process.argv);
