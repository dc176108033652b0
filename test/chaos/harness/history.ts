/**
 * The run's history: every request and reply, fault, operator action and verdict, one JSON line
 * each with a wall-clock and a run-relative time. Written as it happens (a crash of the harness
 * still leaves it), kept with the spy logs when a run fails, for replay with the printed seed.
 */
import { createWriteStream, type WriteStream } from 'node:fs';

export class History {
  private readonly out: WriteStream;
  private readonly started = Date.now();

  constructor(readonly file: string) {
    this.out = createWriteStream(file, { flags: 'a' });
  }

  write(record: Record<string, unknown>): void {
    const line = JSON.stringify({ ms: Date.now() - this.started, ...record }, (_k, v: unknown) =>
      typeof v === 'bigint' ? v.toString() : v,
    );
    this.out.write(`${line}\n`);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.out.end(() => resolve()));
  }
}
