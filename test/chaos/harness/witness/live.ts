/**
 * Follows every spy log of a run as it grows (one file per process start) and feeds complete
 * C_Sign records to the judge. A record is complete once the next record's header follows it,
 * or once it holds its "Returned:" line; the tail of a log whose process has died is flushed as
 * it is (an unfinished C_Sign there is an interrupted call, not a signature).
 */
import { existsSync } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Judge } from './checker.ts';
import { parseSpyLog } from './spy-log.ts';

interface Follow {
  offset: number;
  pending: string;
}

const HEADER = /^\d+: C_\w+$/gm;

export class LiveWitness {
  readonly judge = new Judge();
  private readonly files = new Map<string, Follow>();
  interruptedSigns = 0;
  failedSigns = 0;

  constructor(readonly dir: string) {}

  /** Reads what was appended to every log since the last call. */
  async poll(): Promise<void> {
    if (!existsSync(this.dir)) return;
    for (const name of (await readdir(this.dir)).sort()) {
      if (!name.endsWith('.log')) continue;
      const path = join(this.dir, name);
      const f = this.files.get(path) ?? { offset: 0, pending: '' };
      this.files.set(path, f);
      const fh = await open(path, 'r');
      try {
        const size = (await fh.stat()).size;
        if (size <= f.offset) continue;
        const buf = Buffer.alloc(size - f.offset);
        await fh.read(buf, 0, buf.length, f.offset);
        f.offset = size;
        f.pending += buf.toString('latin1');
      } finally {
        await fh.close();
      }
      this.consume(path, f, false);
    }
  }

  /** Reads everything, taking every log's tail as final (all processes must have exited). */
  async flush(): Promise<void> {
    await this.poll();
    for (const [path, f] of this.files) this.consume(path, f, true);
  }

  private consume(path: string, f: Follow, final: boolean): void {
    let cut = f.pending.length;
    if (!final) {
      const starts = [...f.pending.matchAll(HEADER)].map((m) => m.index ?? 0);
      const last = starts[starts.length - 1];
      if (last === undefined) return;
      const tail = f.pending.slice(last);
      // The last record is complete once its return value line has been written out whole.
      if (!/\nReturned:[^\n]*\n/.test(tail)) cut = last;
    }
    const text = f.pending.slice(0, cut);
    f.pending = f.pending.slice(cut);
    if (text.length === 0) return;
    const log = parseSpyLog(path, text);
    for (const s of log.signs) this.judge.addSign(s);
    this.failedSigns += log.failedSigns;
    if (log.interruptedSign) this.interruptedSigns++;
  }
}
