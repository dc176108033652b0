/**
 * The invariants, checked as the simulation runs:
 *   1. no two different sign bytes (nor vote-extension sign bytes) signed at one (chain, HRS),
 *      across every node's HSM;
 *   2. nothing signed that was not reserved first: the bytes an HSM signs are in a state some
 *      transaction committed to etcd before;
 *   3. HRS never backwards: a state a node commits is not below the highest state ever committed
 *      for that chain (by a node or by the operator), nor other bytes at the same HRS;
 *   4. fencing: a node commits a state only while the leader key names it;
 *   5. at most one node serving per fencing token, and only with a token etcd issued.
 * 1 and 2 are checked when an HSM signs, 3 and 4 when etcd commits, 5 after every step.
 * The checker sees the simulated world from outside; nothing in the code under test reads it.
 */
import { bytesEqual } from '../src/cometbft/bytes.ts';
import { compareHRS } from '../src/cometbft/types.ts';
import type { EtcdKv } from '../src/ports/etcd.ts';
import { decodeSignState } from '../src/store/etcd.ts';
import type { SignState } from '../src/store/types.ts';
import type { Writer } from './etcd-model.ts';

/** What one registered sign-bytes value stands for. */
interface BytesInfo {
  chainId: string;
  /** "h/r/s" */
  hrs: string;
  kind: 'sign' | 'ext';
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const hrsText = (s: { height: bigint; round: number; step: number }): string =>
  `${s.height}/${s.round}/${s.step}`;

export class Checker {
  readonly violations: string[] = [];
  /** every sign-bytes value a validator asked for */
  readonly #asked = new Map<string, BytesInfo>();
  /** what was signed at each (chain, HRS, kind) */
  readonly #signed = new Map<string, string>();
  /** every sign-bytes value some committed state carried */
  readonly #reserved = new Set<string>();
  /** the highest state committed per state key */
  readonly #high = new Map<string, SignState>();
  /** leader-key terms etcd issued: "createRevision|lease|value" */
  readonly #terms = new Set<string>();
  signatures = 0;
  reservations = 0;

  /** A validator built a request: its sign bytes stand for (chain, HRS). */
  asked(chainId: string, hrs: string, signBytes: Uint8Array, extensionSignBytes: Uint8Array): void {
    this.#asked.set(hex(signBytes), { chainId, hrs, kind: 'sign' });
    if (extensionSignBytes.length > 0)
      this.#asked.set(hex(extensionSignBytes), { chainId, hrs, kind: 'ext' });
  }

  /** The highest state committed for the state key of `chainId` under `prefix`. */
  high(stateKey: string): SignState | undefined {
    return this.#high.get(stateKey);
  }

  /** An HSM signs `bytes` (invariants 1 and 2). */
  signed(node: string, bytes: Uint8Array): void {
    this.signatures++;
    const h = hex(bytes);
    const info = this.#asked.get(h);
    if (info === undefined) {
      this.#violate(`${node} signed bytes no validator asked for (${h.slice(0, 16)}…)`);
      return;
    }
    if (!this.#reserved.has(h)) {
      this.#violate(
        `${node} signed ${info.kind} bytes at ${info.chainId} ${info.hrs} that were never reserved`,
      );
    }
    const at = `${info.chainId} ${info.hrs} ${info.kind}`;
    const before = this.#signed.get(at);
    if (before !== undefined && before !== h) {
      this.#violate(`double sign: ${node} signed other ${info.kind} bytes at ${at}`);
    }
    this.#signed.set(at, h);
  }

  /** etcd committed `kv` (undefined: deleted) at `key` (invariants 3 and 4). */
  committed(
    key: string,
    kv: EtcdKv | undefined,
    writer: Writer | undefined,
    leader: EtcdKv | undefined,
  ): void {
    if (key.endsWith('leader') && kv !== undefined) {
      this.#terms.add(`${kv.createRevision}|${kv.lease}|${kv.value.toString()}`);
      return;
    }
    const at = key.indexOf('state/');
    if (at < 0 || kv === undefined) return;
    let state: SignState;
    try {
      state = decodeSignState(kv.value, key);
    } catch {
      return;
    }
    this.#reserved.add(hex(state.signBytes));
    if (state.extensionSignBytes.length > 0) this.#reserved.add(hex(state.extensionSignBytes));
    const high = this.#high.get(key);
    if (writer?.kind === 'kms') {
      this.reservations++;
      const leaderNode = leader === undefined ? undefined : nodeOf(leader);
      if (leaderNode !== writer.node) {
        this.#violate(
          `${writer.node} committed ${hrsText(state)} at ${key} while the leader key names ${leaderNode ?? 'nobody'}`,
        );
      }
      if (high !== undefined) {
        const order = compareHRS(state, high);
        if (
          order < 0 ||
          (order === 0 && high.signBytes.length > 0 && !bytesEqual(state.signBytes, high.signBytes))
        ) {
          this.#violate(
            `${writer.node} committed ${hrsText(state)} at ${key}, below ${hrsText(high)} committed before`,
          );
        }
      }
    }
    if (high === undefined || compareHRS(state, high) > 0) this.#high.set(key, state);
  }

  /** Invariant 5, over the nodes serving now: [node, "createRevision|lease|value"]. */
  serving(tokens: Array<[string, string]>): void {
    const seen = new Map<string, string>();
    for (const [node, token] of tokens) {
      const other = seen.get(token);
      if (other !== undefined) this.#violate(`${node} and ${other} serve with one fencing token ${token}`);
      seen.set(token, node);
      if (!this.#terms.has(token)) this.#violate(`${node} serves with a token etcd never issued: ${token}`);
    }
  }

  #violate(what: string): void {
    this.violations.push(what);
  }
}

function nodeOf(kv: EtcdKv): string | undefined {
  try {
    const v = JSON.parse(kv.value.toString()) as { nodeId?: unknown };
    return typeof v.nodeId === 'string' ? v.nodeId : undefined;
  } catch {
    return undefined;
  }
}

export { hrsText };
