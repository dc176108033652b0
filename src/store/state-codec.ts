/**
 * The on-disk format of the file store: one state file and one high-water record per chain.
 * Both are JSON with a sha256 checksum over their canonical content, so a torn write, a bit flip
 * or a hand edit is detected instead of being read as a valid (and possibly older) state.
 */
import { createHash } from 'node:crypto';
import type { HRS } from '../cometbft/types.ts';
import type { SignState } from './types.ts';

/** Version of both file formats; bumped on any incompatible change. */
export const STATE_FORMAT_VERSION = 1;
const STATE_KIND = 'cometkms/sign-state';
const HWM_KIND = 'cometkms/sign-state-hwm';
const INT64_MAX = (1n << 63n) - 1n;
const INT32_MAX = 2 ** 31 - 1;

/** A state as stored: the sign state plus the write counter that orders every write of a chain. */
export interface StoredState {
  chainId: string;
  /** 1 for the first write, +1 on every write after it */
  generation: bigint;
  state: SignState;
}

/**
 * The high-water record: written after the state file on every write (see file.ts for the
 * crash argument). `stateChecksum` ties it to exactly one state file content.
 */
export interface HighWaterMark extends HRS {
  chainId: string;
  generation: bigint;
  stateChecksum: string;
}

/** Renders an HRS for operator messages, e.g. `12/0/2`. */
export function formatHrs(hrs: HRS): string {
  return `${hrs.height}/${hrs.round}/${hrs.step}`;
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

function stateBody(s: StoredState): Record<string, unknown> {
  return {
    format: STATE_FORMAT_VERSION,
    kind: STATE_KIND,
    chain_id: s.chainId,
    generation: s.generation.toString(),
    height: s.state.height.toString(),
    round: s.state.round,
    step: s.state.step,
    sign_bytes: Buffer.from(s.state.signBytes).toString('hex'),
    extension_sign_bytes: Buffer.from(s.state.extensionSignBytes).toString('hex'),
    signature: Buffer.from(s.state.signature).toString('hex'),
  };
}

function hwmBody(h: HighWaterMark): Record<string, unknown> {
  return {
    format: STATE_FORMAT_VERSION,
    kind: HWM_KIND,
    chain_id: h.chainId,
    generation: h.generation.toString(),
    height: h.height.toString(),
    round: h.round,
    step: h.step,
    state_checksum: h.stateChecksum,
  };
}

/** The checksum of a state: sha256 over its canonical (compact, fixed key order) JSON. */
export function stateChecksum(s: StoredState): string {
  return sha256Hex(JSON.stringify(stateBody(s)));
}

/** Serialises a state file: the canonical fields followed by their checksum. */
export function encodeStateFile(s: StoredState): string {
  return `${JSON.stringify({ ...stateBody(s), checksum: stateChecksum(s) }, null, 2)}\n`;
}

/** Serialises a high-water record. */
export function encodeHwmFile(h: HighWaterMark): string {
  const body = hwmBody(h);
  return `${JSON.stringify({ ...body, checksum: sha256Hex(JSON.stringify(body)) }, null, 2)}\n`;
}

/** Reads the fields of one parsed record; every failure names the field. */
class FieldReader {
  constructor(private readonly obj: Record<string, unknown>) {}

  string(key: string): string {
    const v = this.obj[key];
    if (typeof v !== 'string') throw new Error(`field "${key}" must be a string`);
    return v;
  }

  uint(key: string, max: number): number {
    const v = this.obj[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
      throw new Error(`field "${key}" must be an integer in 0..${max}`);
    }
    return v;
  }

  decimal(key: string, min: bigint): bigint {
    const v = this.string(key);
    if (!/^(0|[1-9][0-9]*)$/.test(v)) throw new Error(`field "${key}" must be a decimal integer string`);
    const n = BigInt(v);
    if (n < min || n > INT64_MAX) throw new Error(`field "${key}" out of range`);
    return n;
  }

  hex(key: string): Uint8Array {
    const v = this.string(key);
    if (!/^([0-9a-f]{2})*$/.test(v)) throw new Error(`field "${key}" must be lowercase hex`);
    return new Uint8Array(Buffer.from(v, 'hex'));
  }
}

/** Parses JSON and checks the envelope (exact key set, kind, format); returns a field reader. */
function parseRecord(text: string, kind: string, keys: string[]): FieldReader {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error('not valid JSON (torn or damaged write?)');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error('not a JSON object');
  }
  const obj = parsed as Record<string, unknown>;
  const expected = new Set([...keys, 'checksum']);
  for (const k of Object.keys(obj)) if (!expected.has(k)) throw new Error(`unexpected field "${k}"`);
  for (const k of expected) if (!(k in obj)) throw new Error(`missing field "${k}"`);
  if (obj['kind'] !== kind) throw new Error(`field "kind" must be "${kind}"`);
  if (obj['format'] !== STATE_FORMAT_VERSION) {
    throw new Error(`unsupported format version ${JSON.stringify(obj['format'])}`);
  }
  return new FieldReader(obj);
}

/**
 * Decodes and verifies a state file. Throws a plain Error describing what is wrong; the caller
 * adds which file and what the operator should do.
 */
export function decodeStateFile(text: string): StoredState {
  const r = parseRecord(text, STATE_KIND, Object.keys(stateBody(EXAMPLE_STATE)));
  const s: StoredState = {
    chainId: r.string('chain_id'),
    generation: r.decimal('generation', 1n),
    state: {
      height: r.decimal('height', 0n),
      round: r.uint('round', INT32_MAX),
      step: r.uint('step', 3),
      signBytes: r.hex('sign_bytes'),
      extensionSignBytes: r.hex('extension_sign_bytes'),
      signature: r.hex('signature'),
    },
  };
  if (r.string('checksum') !== stateChecksum(s))
    throw new Error('checksum mismatch (damaged or edited file)');
  return s;
}

/** Decodes and verifies a high-water record (errors as for decodeStateFile). */
export function decodeHwmFile(text: string): HighWaterMark {
  const r = parseRecord(text, HWM_KIND, Object.keys(hwmBody(EXAMPLE_HWM)));
  const h: HighWaterMark = {
    chainId: r.string('chain_id'),
    generation: r.decimal('generation', 1n),
    height: r.decimal('height', 0n),
    round: r.uint('round', INT32_MAX),
    step: r.uint('step', 3),
    stateChecksum: r.string('state_checksum'),
  };
  if (r.string('checksum') !== sha256Hex(JSON.stringify(hwmBody(h)))) {
    throw new Error('checksum mismatch (damaged or edited file)');
  }
  return h;
}

// Only their key sets are used: the decoders derive the expected fields from the encoders, so
// the two cannot drift apart.
const EXAMPLE_STATE: StoredState = {
  chainId: '',
  generation: 1n,
  state: {
    height: 0n,
    round: 0,
    step: 0,
    signBytes: new Uint8Array(),
    extensionSignBytes: new Uint8Array(),
    signature: new Uint8Array(),
  },
};
const EXAMPLE_HWM: HighWaterMark = {
  chainId: '',
  generation: 1n,
  height: 0n,
  round: 0,
  step: 0,
  stateChecksum: '',
};
