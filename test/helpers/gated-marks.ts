/**
 * High-water mark storage in memory whose writes can be held (until `release()`) or made to fail,
 * for tests of what waits for a mark to be durable and what a failed write stops.
 */
import type { HRS } from '../../src/cometbft/types.ts';
import type { MarkStorage } from '../../src/store/high-water.ts';

export class GatedMarkStorage implements MarkStorage {
  /** writes wait while this is set (until release()) */
  held = false;
  /** writes throw while this is set */
  failing = false;
  readonly #marks = new Map<string, HRS>();
  readonly #waiting: (() => void)[] = [];

  read(chainId: string): HRS | undefined {
    return this.#marks.get(chainId);
  }

  async write(chainId: string, hrs: HRS): Promise<void> {
    if (this.held) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    if (this.failing) throw new Error('injected: the disk failed');
    this.#marks.set(chainId, { ...hrs });
  }

  /** Lets every held write go on, and the next ones through at once. */
  release(): void {
    this.held = false;
    for (const resolve of this.#waiting.splice(0)) resolve();
  }
}
