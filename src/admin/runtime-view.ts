import type { NodeStatus } from './types.ts';

/** The result of a readiness probe: ready only when every check passed. */
export interface Readiness {
  ready: boolean;
  /** one entry per check: `true` when it passed, else `false` or a short reason */
  checks: Record<string, boolean | string>;
}

/** The outcome of a leadership hand-over request. */
export interface TransferResult {
  transferred: boolean;
  /** operator-facing: who leads now, or why nothing was handed over */
  message: string;
}

/**
 * What the admin API needs from a running node. The node runtime implements it; admin/ only
 * reads it and never reaches into the runtime otherwise, so the API can be tested with a fake.
 */
export interface AdminRuntime {
  /** A fresh snapshot of the `/status` body (called once per request, so keep it cheap). */
  status(): NodeStatus;
  /** Whether the node can serve signing requests now, and why not. */
  readiness(): Readiness;
  /**
   * Hands leadership over (to `to`, a node id, when given); resolves once it is done or refused.
   * Resolves `{ transferred: false }` for an expected refusal (not the leader, unknown target);
   * rejects only on an unexpected failure.
   */
  transferLeadership(to?: string): Promise<TransferResult>;
}
