/**
 * The stages a signing request passes through, for the per-stage latency histogram
 * (`cometkms_sign_stage_duration_seconds{stage}`) and `npm run bench`'s breakdown. Each layer
 * reports the stages it owns to a {@link StageObserver}: privval (read, decode, encode, write),
 * the guard (queue … report) and cluster forwarding (forward). Timing is a pair of
 * `performance.now()` calls and one call here per stage: nothing is allocated per request.
 *
 * Stages, in the order a request meets them:
 * - `read`: SecretConnection decryption of the request's frames (tcp only);
 * - `decode`: the privval request decoded from protobuf;
 * - `queue`: waiting for the chain's guard (another request of the chain in flight);
 * - `decide`: the double-sign rule, including building the canonical sign bytes;
 * - `reserve`: the durable reservation (file: one log record; cluster: the fenced etcd
 *   transaction and what the store does with it before it returns);
 * - `hsm`: the signer (PKCS#11 lock, C_SignInit, C_Sign, low-S);
 * - `verify`: the guard's verification of the signature against the public key;
 * - `seal`: waiting, after signing, for the writes that must be durable before a signature may
 *   be returned (file: the seal, started with the reservation and overlapped with `hsm`;
 *   cluster: nothing, the high-water mark is raised inside `reserve`);
 * - `record`: recording the signature in the store;
 * - `report`: metrics, audit log and log line of the decision;
 * - `encode`: the reply encoded and length-prefixed;
 * - `write`: the reply handed to the transport (SecretConnection encryption included);
 * - `forward`: a follower's round trip to the leader (cluster; the leader's own stages are
 *   observed on the leader).
 */
export const SIGN_STAGES = [
  'read',
  'decode',
  'queue',
  'decide',
  'reserve',
  'hsm',
  'verify',
  'seal',
  'record',
  'report',
  'encode',
  'write',
  'forward',
] as const;

/** One stage of {@link SIGN_STAGES}. */
export type SignStage = (typeof SIGN_STAGES)[number];

/** Receives stage durations. Must be cheap and must not throw. */
export interface StageObserver {
  observe(stage: SignStage, ms: number): void;
}

/** Observes nothing (the default wherever no observer is configured). */
export const NO_STAGES: StageObserver = { observe() {} };
