/** The options of `cometkms demo`, checked once so the rest of the demo can trust them. */

/** A validated demo configuration. */
export interface DemoOptions {
  /** how long the simulated validator signs (from its first signature) */
  durationMs: number;
  /** KMS nodes to run; 1 = single-node mode */
  nodes: number;
  /** time per height of the simulated validator */
  blockTimeMs: number;
  /** keep the temporary directory (configs, tokens, logs) and print where it is */
  keep: boolean;
  /** print the summary as JSON on stdout (everything else goes to stderr) */
  json: boolean;
}

/** Most KMS nodes the demo runs on one machine. */
export const MAX_NODES = 5;
/** Shortest run in which a kill, a failover and signing after it can all be seen. */
export const MIN_DURATION_MS = 5_000;
/** Blocks faster than this would only measure the machine, not the failover. */
export const MIN_BLOCK_TIME_MS = 100;

/**
 * Checks the parsed options; throws an Error with an operator-facing message when they cannot
 * make a meaningful demo (the leader is killed at 40 % of the duration, so the duration must
 * leave several blocks on either side of the kill).
 */
export function checkDemoOptions(o: DemoOptions): DemoOptions {
  if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > MAX_NODES) {
    throw new Error(`--nodes must be 1 to ${MAX_NODES}, got ${o.nodes}`);
  }
  if (o.blockTimeMs < MIN_BLOCK_TIME_MS) {
    throw new Error(`--block-time must be at least ${MIN_BLOCK_TIME_MS}ms, got ${o.blockTimeMs}ms`);
  }
  if (o.durationMs < MIN_DURATION_MS) {
    throw new Error(`--duration must be at least ${MIN_DURATION_MS / 1000}s, got ${o.durationMs}ms`);
  }
  if (o.durationMs < 5 * o.blockTimeMs) {
    throw new Error(
      `--duration (${o.durationMs}ms) must be at least 5 block times (--block-time ${o.blockTimeMs}ms)`,
    );
  }
  return o;
}
