/**
 * A validator stand-in that the test drives request by request (no block loop), and the loop that
 * gets one vote signed through the cluster's "try again" replies and reconnects. Shared by the
 * cluster tests that sign chosen votes at chosen heights.
 */
import assert from 'node:assert/strict';
import type { Vote } from '../../src/cometbft/types.ts';
import { type SimulatorOptions, ValidatorSimulator } from '../../src/simulator/simulator.ts';
import { type KmsCluster, startKmsCluster, waitFor } from './kms-cluster.ts';

/** A v0.38 simulator without extensions that sends only what the test asks, on a free loopback port. */
export function manualSentry(
  chainId: string,
  seed: number,
  extra: Partial<SimulatorOptions> = {},
): ValidatorSimulator {
  return new ValidatorSimulator({
    listen: 'tcp://127.0.0.1:0',
    chainId,
    protocol: 'v0.38',
    blockTimeMs: 0,
    heights: 0,
    seed,
    extensions: false,
    ...extra,
  });
}

/**
 * A cluster of `nodes` (default 3) signing for one manual sentry with the key of seed bytes all
 * `keyFill`; resolves once a node is connected and the sentry knows the public key (votes carry
 * the validator's address).
 */
export async function clusterWithSentry(o: {
  chainId: string;
  seed: number;
  keyFill: number;
  nodes?: number;
}): Promise<{ cluster: KmsCluster; sim: ValidatorSimulator }> {
  const sim = manualSentry(o.chainId, o.seed);
  const addr = await sim.listen();
  const cluster = await startKmsCluster({
    chainId: o.chainId,
    protocol: 'v0.38',
    validators: [addr],
    keySeed: new Uint8Array(32).fill(o.keyFill),
    ...(o.nodes === undefined ? {} : { nodes: o.nodes }),
  });
  assert.ok(await sim.waitForSigner(30_000), 'a KMS node connected');
  await sim.requestPubKey();
  return { cluster, sim };
}

/**
 * Sends `vote` until it is signed, through "try again" (empty) replies and dropped connections
 * (the simulator adopts the next node that dials in), for at most `ms`. A refusal is final and
 * fails at once.
 */
export async function signUntilAccepted(sim: ValidatorSimulator, vote: Vote, ms = 20_000): Promise<void> {
  await waitFor(`a signature at ${vote.height}/${vote.round}`, ms, async () => {
    const reply = await sim.requestVote(vote).catch(() => undefined);
    if (reply?.kind !== 'signedVoteResponse') return false;
    assert.equal(reply.error, undefined, `${vote.height}/${vote.round} refused: ${reply.error?.description}`);
    assert.ok(reply.vote.signature.length > 0, 'a signature');
    return true;
  });
}
