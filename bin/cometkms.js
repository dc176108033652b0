#!/usr/bin/env node
// Entry point of the `cometkms` command. The TypeScript sources are loaded through tsx so that
// the command always runs exactly the code in src/ (no stale build can be picked up by mistake).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
