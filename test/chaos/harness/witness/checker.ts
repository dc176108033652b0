/**
 * The verdict of a chaos run, judged only from what reached the HSM (the spy logs) and what the
 * sentries received; nothing CometKMS says about itself is consulted.
 *
 * A conflict is, for one chain, across every node and process of the run:
 *   - one (height, round, step) signed for two different blocks (a proposal's pol_round counts
 *     as part of what it proposes), or for one block with two different timestamps;
 *   - one (height, round) whose vote extension was signed over two different extensions.
 * Re-signing identical bytes is not a conflict (ed25519 is deterministic: it is the same
 * signature). Every signature a sentry received must be one the witness saw being made; a
 * signature the witness saw but no sentry received is "undelivered" (made for a dead socket, by
 * a frozen leader after it thawed, ...): not a fault in itself, but exactly the signatures the
 * old node-side checks could not see.
 */
import { type Canonical, decodeCanonical } from './canonical.ts';
import type { SpySign } from './spy-log.ts';

/** One signature a sentry received, over the sign bytes the sentry computed itself. */
export interface Delivery {
  sentry: string;
  signBytes: Uint8Array;
  signature: Uint8Array;
}

/** Two witnessed signatures that must not both exist. */
export interface Conflict {
  chainId: string;
  height: string;
  round: string;
  step: number | 'extension';
  why: string;
  first: { file: string; seq: number; data: string };
  second: { file: string; seq: number; data: string };
}

export interface Verdict {
  /** successful C_Sign calls over canonical sign bytes */
  witnessed: number;
  /** distinct canonical sign bytes witnessed */
  distinct: number;
  /** distinct witnessed sign bytes no sentry received */
  undelivered: number;
  /** C_Sign over bytes that are no canonical message (key self-tests) */
  other: number;
  conflicts: Conflict[];
  /** deliveries whose (bytes, signature) the witness never saw made: signatures from nowhere */
  unwitnessed: Array<{ sentry: string; data: string }>;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

interface Seen {
  sign: SpySign;
  msg: Canonical;
}

/**
 * Judges a run incrementally: signs and deliveries are added as they are read, the verdict can
 * be taken at any time (a conflict is found the moment its second signature is added).
 */
export class Judge {
  readonly conflicts: Conflict[] = [];
  private witnessed = 0;
  private other = 0;
  /** chain/h/r/step → the first witnessed signature per distinct payload */
  private readonly slots = new Map<string, Map<string, Seen>>();
  /** sign bytes (hex) → signatures (hex) made over them */
  private readonly made = new Map<string, Set<string>>();
  private readonly deliveries: Delivery[] = [];
  /** highest witnessed (height, round, step) per chain */
  readonly highest = new Map<string, { height: bigint; round: bigint; step: number }>();

  addSign(sign: SpySign): void {
    const msg = decodeCanonical(sign.data);
    if (msg === undefined) {
      this.other++;
      return;
    }
    this.witnessed++;
    const dataHex = hex(sign.data);
    const sigs = this.made.get(dataHex) ?? new Set<string>();
    this.made.set(dataHex, sigs);
    sigs.add(hex(sign.signature));
    const step = msg.kind === 'extension' ? 'extension' : msg.step;
    if (msg.kind !== 'extension') this.raise(msg.chainId, msg.height, msg.round, msg.step);
    const slotKey = `${msg.chainId}\u0000${msg.height}/${msg.round}/${step}`;
    const slot = this.slots.get(slotKey) ?? new Map<string, Seen>();
    this.slots.set(slotKey, slot);
    if (slot.has(dataHex)) return;
    for (const prior of slot.values()) {
      this.conflicts.push({
        chainId: msg.chainId,
        height: msg.height.toString(),
        round: msg.round.toString(),
        step,
        why: conflictReason(prior.msg, msg),
        first: { file: prior.sign.file, seq: prior.sign.seq, data: hex(prior.sign.data) },
        second: { file: sign.file, seq: sign.seq, data: dataHex },
      });
      break;
    }
    slot.set(dataHex, { sign, msg });
  }

  addDelivery(d: Delivery): void {
    this.deliveries.push(d);
  }

  /** The verdict over everything added so far (deliveries are matched against all signs). */
  verdict(): Verdict {
    const delivered = new Set<string>();
    const unwitnessed: Verdict['unwitnessed'] = [];
    for (const d of this.deliveries) {
      const dataHex = hex(d.signBytes);
      delivered.add(dataHex);
      if (!this.made.get(dataHex)?.has(hex(d.signature)))
        unwitnessed.push({ sentry: d.sentry, data: dataHex });
    }
    let undelivered = 0;
    for (const dataHex of this.made.keys()) if (!delivered.has(dataHex)) undelivered++;
    return {
      witnessed: this.witnessed,
      distinct: this.made.size,
      undelivered,
      other: this.other,
      conflicts: [...this.conflicts],
      unwitnessed,
    };
  }

  private raise(chainId: string, height: bigint, round: bigint, step: number): void {
    const h = this.highest.get(chainId);
    if (
      h === undefined ||
      height > h.height ||
      (height === h.height && (round > h.round || (round === h.round && step > h.step)))
    ) {
      this.highest.set(chainId, { height, round, step });
    }
  }
}

/** Judges a whole run at once. */
export function check(signs: readonly SpySign[], deliveries: readonly Delivery[]): Verdict {
  const judge = new Judge();
  for (const s of signs) judge.addSign(s);
  for (const d of deliveries) judge.addDelivery(d);
  return judge.verdict();
}

function conflictReason(a: Canonical, b: Canonical): string {
  if (a.kind === 'extension' || b.kind === 'extension') return 'two different vote extensions';
  if (a.block !== b.block) return 'two different blocks';
  return `one block with two timestamps (${a.timestamp} and ${b.timestamp})`;
}
