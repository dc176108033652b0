/**
 * Control requests between KMS nodes, carried by the forwarding protocol (forward.ts) without
 * changing it: a control request is a forwarded request whose chain id is empty, which no
 * configured chain can have (config refuses an empty chain id). A node that predates control
 * requests therefore answers "unknown chain", as for any chain it does not serve; the asking node
 * takes that as no answer to "marks?" and "raise" (it does not count towards a majority) and as
 * "alive" to a heartbeat.
 *
 * Bodies (integers big-endian; a "text" is u8 length ‖ UTF-8 bytes):
 *   marks request    = u8 1 ‖ text ballot
 *   heartbeat        = u8 2
 *   raise request    = u8 3 ‖ text ballot ‖ mark
 *   mark             = text chain id ‖ u64 height ‖ u32 round ‖ u8 step
 *   marks answer     = u8 version (1) ‖ text node id ‖ u16 count ‖ count × mark
 *   heartbeat answer = u8 1
 *   raise answer     = u8 1 (raised) | u8 0 (refused: another ballot was promised since, or the
 *                      chain is not served here)
 */
import type { PeerMark, PeerMarks } from '../ports/peers.ts';

/** The chain id of a control request (never a configured chain's). */
export const CONTROL_CHAIN_ID = '';

export const ControlKind = { marks: 1, heartbeat: 2, raise: 3 } as const;
export type ControlKind = (typeof ControlKind)[keyof typeof ControlKind];

/** A parsed control request. */
export type ControlRequest =
  | { kind: typeof ControlKind.marks; ballot: string }
  | { kind: typeof ControlKind.heartbeat }
  | { kind: typeof ControlKind.raise; ballot: string; mark: PeerMark };

const MARKS_VERSION = 1;
const MAX_MARKS = 0xffff;
const MAX_TEXT_BYTES = 255;
const INT63_MAX = (1n << 63n) - 1n;

/** The answer to a heartbeat. */
export const HEARTBEAT_ANSWER: Uint8Array = Uint8Array.of(1);
/** The answers to a raise. */
export const RAISE_ACCEPTED: Uint8Array = Uint8Array.of(1);
export const RAISE_REFUSED: Uint8Array = Uint8Array.of(0);

/** Appends bytes to a growing list (control bodies are small). */
class Writer {
  readonly #parts: Buffer[] = [];
  u8(v: number): this {
    this.#parts.push(Buffer.of(v));
    return this;
  }
  text(s: string, what: string): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > MAX_TEXT_BYTES) throw new RangeError(`${what} too long for a control request`);
    return this.u8(b.length).bytes(b);
  }
  bytes(b: Buffer): this {
    this.#parts.push(b);
    return this;
  }
  mark(m: PeerMark): this {
    this.text(m.chainId, 'chain id');
    const b = Buffer.alloc(13);
    b.writeBigUInt64BE(m.height, 0);
    b.writeUInt32BE(m.round, 8);
    b.writeUInt8(m.step, 12);
    return this.bytes(b);
  }
  done(): Uint8Array {
    const out = Buffer.concat(this.#parts);
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }
}

/** Reads a control body; every read throws on truncation. */
class Reader {
  readonly #b: Buffer;
  #at = 0;
  constructor(body: Uint8Array) {
    this.#b = Buffer.from(body.buffer, body.byteOffset, body.length);
  }
  #need(n: number): void {
    if (this.#at + n > this.#b.length) throw new Error('truncated control body');
  }
  u8(): number {
    this.#need(1);
    return this.#b.readUInt8(this.#at++);
  }
  u16(): number {
    this.#need(2);
    const v = this.#b.readUInt16BE(this.#at);
    this.#at += 2;
    return v;
  }
  text(): string {
    const len = this.u8();
    this.#need(len);
    const s = this.#b.toString('utf8', this.#at, this.#at + len);
    this.#at += len;
    return s;
  }
  mark(): PeerMark {
    const chainId = this.text();
    this.#need(13);
    const height = this.#b.readBigUInt64BE(this.#at);
    const round = this.#b.readUInt32BE(this.#at + 8);
    const step = this.#b.readUInt8(this.#at + 12);
    this.#at += 13;
    if (height > INT63_MAX || round > 2 ** 31 - 1 || step > 3) throw new Error('mark out of range');
    return { chainId, height, round, step };
  }
  end(): void {
    if (this.#at !== this.#b.length) throw new Error('trailing bytes in a control body');
  }
}

/** The body of a control request. Throws when a text is too long. */
export function encodeControlRequest(req: ControlRequest): Uint8Array {
  const w = new Writer().u8(req.kind);
  if (req.kind === ControlKind.marks) w.text(req.ballot, 'ballot');
  if (req.kind === ControlKind.raise) w.text(req.ballot, 'ballot').mark(req.mark);
  return w.done();
}

/** Parses a control request body; undefined for anything malformed or unknown. */
export function parseControlRequest(body: Uint8Array): ControlRequest | undefined {
  try {
    const r = new Reader(body);
    const kind = r.u8();
    let req: ControlRequest | undefined;
    if (kind === ControlKind.marks) req = { kind, ballot: r.text() };
    else if (kind === ControlKind.heartbeat) req = { kind };
    else if (kind === ControlKind.raise) req = { kind, ballot: r.text(), mark: r.mark() };
    r.end();
    return req;
  } catch {
    return undefined;
  }
}

/** Encodes a marks answer. Throws when an id is too long or there are too many marks. */
export function encodeMarksAnswer(answer: PeerMarks): Uint8Array {
  if (answer.marks.length > MAX_MARKS) throw new RangeError('too many chains for a marks answer');
  const w = new Writer().u8(MARKS_VERSION).text(answer.nodeId, 'node id');
  const count = Buffer.alloc(2);
  count.writeUInt16BE(answer.marks.length, 0);
  w.bytes(count);
  for (const m of answer.marks) w.mark(m);
  return w.done();
}

/** Decodes a marks answer; throws on anything malformed (the answer then counts as none). */
export function decodeMarksAnswer(body: Uint8Array): PeerMarks {
  const r = new Reader(body);
  const version = r.u8();
  if (version !== MARKS_VERSION) throw new Error(`unknown marks answer version ${version}`);
  const nodeId = r.text();
  const count = r.u16();
  const marks: PeerMark[] = [];
  for (let i = 0; i < count; i++) marks.push(r.mark());
  r.end();
  return { nodeId, marks };
}
