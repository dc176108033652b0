/**
 * The two validator stand-ins the benchmarks drive:
 * - `sequentialSimulator`: prevote, precommit and a proposal every height, no nil votes, round
 *   changes, retries or extensions, so every request is exactly one HSM signature (latency and
 *   failover figures compare like with like);
 * - `chainSimulator`: a chain as it runs (proposer every 4th round, 5% nil votes, round changes
 *   and retries, vote extensions), for the many-chains and memory figures.
 */
import { ValidatorSimulator } from '../src/simulator/simulator.ts';

interface SimulatorParams {
  listen: string;
  chainId: string;
  heights: number;
  /** default 0 (as fast as the signer answers) */
  blockTimeMs?: number;
  /** default 1 */
  startHeight?: bigint;
  /** default 1 */
  seed?: number;
  /** default 60 s */
  connectTimeoutMs?: number;
}

function common(p: SimulatorParams) {
  return {
    listen: p.listen,
    chainId: p.chainId,
    protocol: 'v0.38' as const,
    blockTimeMs: p.blockTimeMs ?? 0,
    heights: p.heights,
    startHeight: p.startHeight ?? 1n,
    seed: p.seed ?? 1,
    connectTimeoutMs: p.connectTimeoutMs ?? 60_000,
  };
}

export function sequentialSimulator(p: SimulatorParams): ValidatorSimulator {
  return new ValidatorSimulator({
    ...common(p),
    proposerEvery: 1,
    nilVoteRate: 0,
    roundChangeRate: 0,
    retryRate: 0,
    extensions: false,
  });
}

export function chainSimulator(p: SimulatorParams): ValidatorSimulator {
  return new ValidatorSimulator({
    ...common(p),
    proposerEvery: 4,
    nilVoteRate: 0.05,
    roundChangeRate: 0.05,
    retryRate: 0.05,
    extensions: true,
  });
}
