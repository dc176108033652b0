/**
 * SIGTERM / SIGINT handling of a running node: the first signal asks for a graceful shutdown,
 * a second one (the operator insisting, or a supervisor's stop timeout) exits at once with 1.
 */
import type pino from 'pino';

const SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];

/** Watches SIGTERM and SIGINT from construction until {@link dispose}. */
export class ShutdownSignals {
  /** Resolves with the first signal received. */
  readonly first: Promise<NodeJS.Signals>;
  private resolveFirst!: (signal: NodeJS.Signals) => void;
  private received: NodeJS.Signals | undefined;
  private readonly handler = (signal: NodeJS.Signals): void => this.onSignal(signal);

  constructor(
    private readonly log: pino.Logger,
    /** how to exit on the second signal (process.exit; replaceable for tests) */
    private readonly exit: (code: number) => void = (code) => process.exit(code),
  ) {
    this.first = new Promise((resolve) => {
      this.resolveFirst = resolve;
    });
    for (const s of SIGNALS) process.on(s, this.handler);
  }

  /** Removes the handlers (the default behaviour of the signals comes back). */
  dispose(): void {
    for (const s of SIGNALS) process.off(s, this.handler);
  }

  private onSignal(signal: NodeJS.Signals): void {
    if (this.received === undefined) {
      this.received = signal;
      this.log.info({ signal }, 'shutting down (send the signal again to exit at once)');
      this.resolveFirst(signal);
      return;
    }
    this.log.fatal({ signal, first: this.received }, 'second signal during shutdown: exiting now');
    this.exit(1);
  }
}
