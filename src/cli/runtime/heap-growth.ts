/**
 * How far a running node lets V8's old generation grow past its live data before the next full
 * collection. By default V8 picks that step from how fast it collects against how fast the
 * process allocates, up to 4 times the live heap. A cluster leader signing 100 chains holds
 * about 30 MB of live heap but allocates fast (etcd, gRPC, TLS), and V8 let it reach 133-177 MB
 * RSS (bench/many-chains.bench.ts, ten 60 s windows). With a step of 30 % every node of the same
 * cluster stayed at 108-116 MB; 50 % left the leader at 121-124 MB. The price is more full
 * collections: deploy/README.md quotes what they cost under load.
 *
 * Node refuses this V8 flag in NODE_OPTIONS, so `cometkms start` sets it itself at startup; V8
 * reads it each time it sizes the next step, so setting it after the heap exists is enough. A
 * value given on node's own command line (`node --heap-growing-percent=N …`) is left alone.
 */
import { setFlagsFromString } from 'node:v8';

export const HEAP_GROWING_PERCENT = 30;

const FLAG = /^--heap[-_]growing[-_]percent(=|$)/;

/**
 * Sets V8's old-generation growing step to HEAP_GROWING_PERCENT unless `execArgv` (node's own
 * flags) already sets one. Returns the flag set, or undefined when node's own one was kept.
 */
export function limitHeapGrowth(execArgv: readonly string[] = process.execArgv): string | undefined {
  if (execArgv.some((arg) => FLAG.test(arg))) return undefined;
  const flag = `--heap-growing-percent=${HEAP_GROWING_PERCENT}`;
  setFlagsFromString(flag);
  return flag;
}
