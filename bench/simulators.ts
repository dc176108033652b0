/**
 * The two validator stand-ins the benchmarks drive:
 * - `sequentialSimulator`: prevote, precommit and a proposal every height, no nil votes, round
 *   changes, retries or extensions (a v0.38 non-nil precommit still carries the signature of its
 *   empty extension: two HSM signatures; proposals and prevotes one);
 * - `chainSimulator`: a chain as it runs (proposer every 4th round, 5% nil votes, round changes
 *   and retries, vote extensions), for the many-chains and memory figures.
 */
import { Rng } from '../src/simulator/rng.ts';
import { type SimulationSummary, ValidatorSimulator } from '../src/simulator/simulator.ts';

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

/**
 * Runs every simulator, each from its own phase: a seeded uniform offset within one block time.
 * Separate chains are not in step (each has its own validators, proposers and timeouts), so
 * starting them all at once would be a load no deployment sees: every chain asking for its
 * prevote in the same millisecond of every second, which one HSM can only sign one after the
 * other. `lockstep` keeps that worst case (every offset 0) for the figures that show it.
 */
export function runChains(
  sims: readonly ValidatorSimulator[],
  blockTimeMs: number,
  phases: 'independent' | 'lockstep',
  seed = 1,
): Promise<SimulationSummary>[] {
  const rng = new Rng(seed);
  return sims.map((sim) => {
    const offsetMs = phases === 'lockstep' ? 0 : Math.floor(rng.next() * blockTimeMs);
    return new Promise<void>((resolve) => setTimeout(resolve, offsetMs)).then(() => sim.run());
  });
}
