/**
 * A FIFO async mutex. PKCS#11 sessions are not safe for interleaved operations: C_SignInit and
 * C_Sign are two calls with an await between them, so another sign on the same session could
 * slip in and hit CKR_OPERATION_ACTIVE or, worse, sign with the other caller's key.
 */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  /** Runs `fn` once every earlier holder has finished; the lock is released however `fn` ends. */
  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
