/**
 * A FIFO async mutex: `run` calls execute one at a time, in call order. The guard uses one per
 * chain so that requests arriving from several validator endpoints at once cannot interleave
 * between "decide" and "reserve".
 */
export class AsyncMutex {
  private tail: Promise<void> = Promise.resolve();

  /** Runs `fn` once every earlier `run` has settled; resolves or rejects with its result. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    // The next caller waits for this one to settle, whether it succeeded or not.
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
