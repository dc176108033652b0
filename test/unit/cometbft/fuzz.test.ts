/**
 * Bounded randomized tests (fast-check, fixed seed, ~45k generated inputs in total):
 * - decodeMessage, FrameDecoder and the canonical decoders either return or throw CodecError,
 *   on pure random bytes and on mutations of valid messages;
 * - whatever decodes re-encodes and decodes to the same value;
 * - generated messages of every kind round-trip in every version, also through framing split
 *   at random points;
 * - canonical sign bytes decode back to their fields, and timestampOnlyDifference recognises
 *   timestamp-only changes and nothing else.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CodecError } from '../../../src/cometbft/errors.ts';
import { encodeFramedMessage, FrameDecoder } from '../../../src/cometbft/framing.ts';
import { decodeMessage, encodeMessage } from '../../../src/cometbft/messages.ts';
import {
  decodeCanonicalProposal,
  decodeCanonicalVote,
  proposalSignBytes,
  timestampOnlyDifference,
  voteSignBytes,
} from '../../../src/cometbft/signbytes.ts';
import {
  type BlockID,
  PROTOCOL_VERSIONS,
  type PrivvalMessage,
  type Proposal,
  type ProtocolVersion,
  type PubKey,
  type RemoteSignerError,
  type Timestamp,
  type Vote,
} from '../../../src/cometbft/types.ts';

const SEED = 0x5eed_c0de;
const run = (numRuns: number) => ({ seed: SEED, numRuns });

/** Runs `fn`; any exception other than CodecError fails the property. */
function returnsOrCodecError<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    if (err instanceof CodecError) return undefined;
    throw err;
  }
}

// ---- arbitraries ------------------------------------------------------------------------------

/** Plain objects: deepStrictEqual compares prototypes and decoded values are plain. */
const plain = { noNullPrototype: true };
const int32 = fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
const int64 = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
const uint32 = fc.integer({ min: 0, max: 2 ** 32 - 1 });
const bytes = fc.uint8Array({ maxLength: 40 });
const text = fc.string({ unit: 'binary', maxLength: 20 });
const hash = fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ minLength: 32, maxLength: 32 }));
const timestamp: fc.Arbitrary<Timestamp> = fc.record(
  {
    seconds: fc.bigInt({ min: -62135596800n, max: 253402300799n }),
    nanos: fc.integer({ min: 0, max: 999_999_999 }),
  },
  plain,
);
const blockId: fc.Arbitrary<BlockID> = fc.record(
  {
    hash,
    partSetHeader: fc.record({ total: fc.oneof(fc.constant(0), uint32), hash }, plain),
  },
  plain,
);

function voteArb(version: ProtocolVersion): fc.Arbitrary<Vote> {
  const ext = version === 'v0.38' || version === 'v1.0' ? bytes : fc.constant(new Uint8Array(0));
  return fc.record(
    {
      type: fc.oneof(fc.constantFrom(0, 1, 2, 32), int32),
      height: fc.oneof(fc.bigInt({ min: 0n, max: 1000n }), int64),
      round: int32,
      blockId,
      timestamp,
      validatorAddress: bytes,
      validatorIndex: int32,
      signature: bytes,
      extension: ext,
      extensionSignature: ext,
    },
    plain,
  );
}

const proposalArb: fc.Arbitrary<Proposal> = fc.record(
  {
    type: fc.oneof(fc.constantFrom(0, 32), int32),
    height: int64,
    round: int32,
    polRound: fc.oneof(fc.constant(-1), int32),
    blockId,
    timestamp,
    signature: bytes,
  },
  plain,
);
const pubKeyArb: fc.Arbitrary<PubKey> = fc.record(
  { type: fc.constantFrom('ed25519', 'secp256k1'), bytes },
  plain,
);
const errorArb: fc.Arbitrary<RemoteSignerError> = fc.record({ code: int32, description: text }, plain);
const opt = { requiredKeys: ['kind'] as 'kind'[], noNullPrototype: true };

function messageArb(version: ProtocolVersion): fc.Arbitrary<PrivvalMessage> {
  const v1 = version === 'v1.0';
  const vote = voteArb(version);
  const kinds: fc.Arbitrary<PrivvalMessage>[] = [
    fc.constant({ kind: 'empty' }),
    fc.record({ kind: fc.constant('pubKeyRequest'), chainId: text }, plain),
    fc.record({ kind: fc.constant('pubKeyResponse'), pubKey: pubKeyArb, error: errorArb }, opt),
    fc
      .record(
        { kind: fc.constant('signVoteRequest'), vote, chainId: text, skip: fc.boolean() },
        {
          requiredKeys: ['kind', 'chainId', 'skip'],
          noNullPrototype: true,
        },
      )
      .map(({ skip, ...m }) => ({ ...m, skipExtensionSigning: v1 && skip })),
    fc.record(
      { kind: fc.constant('signedVoteResponse'), vote, error: errorArb },
      { requiredKeys: ['kind', 'vote'], noNullPrototype: true },
    ),
    fc.record(
      { kind: fc.constant('signProposalRequest'), proposal: proposalArb, chainId: text },
      {
        requiredKeys: ['kind', 'chainId'],
        noNullPrototype: true,
      },
    ),
    fc.record(
      { kind: fc.constant('signedProposalResponse'), proposal: proposalArb, error: errorArb },
      {
        requiredKeys: ['kind', 'proposal'],
        noNullPrototype: true,
      },
    ),
    fc.constant({ kind: 'pingRequest' }),
    fc.constant({ kind: 'pingResponse' }),
  ];
  if (v1) {
    kinds.push(
      fc.record({ kind: fc.constant('signBytesRequest'), value: bytes }, plain),
      fc.record(
        { kind: fc.constant('signBytesResponse'), signature: bytes, error: errorArb },
        {
          requiredKeys: ['kind', 'signature'],
          noNullPrototype: true,
        },
      ),
    );
  }
  return fc.oneof(...kinds);
}

const versionArb = fc.constantFrom(...PROTOCOL_VERSIONS);
const versionedMessage = versionArb.chain((version) => messageArb(version).map((msg) => ({ version, msg })));

type Mutation = { op: 'flip' | 'set' | 'insert' | 'delete' | 'truncate'; pos: number; value: number };
const mutationArb: fc.Arbitrary<Mutation> = fc.record(
  {
    op: fc.constantFrom('flip', 'set', 'insert', 'delete', 'truncate'),
    pos: fc.nat(),
    value: fc.integer({ min: 0, max: 255 }),
  },
  plain,
);

function mutate(input: Uint8Array, mutations: Mutation[]): Uint8Array {
  let b = Array.from(input);
  for (const m of mutations) {
    const at = m.pos % (b.length + 1);
    if (m.op === 'insert') b.splice(at, 0, m.value);
    else if (m.op === 'truncate') b = b.slice(0, at);
    else if (at < b.length) {
      if (m.op === 'delete') b.splice(at, 1);
      else if (m.op === 'flip') b[at] = (b[at] ?? 0) ^ (1 << (m.value % 8));
      else b[at] = m.value;
    }
  }
  return Uint8Array.from(b);
}

/** Decoding `body` returns or throws CodecError; what decodes is a fixed point of encode∘decode. */
function checkDecode(body: Uint8Array, version: ProtocolVersion): void {
  const msg = returnsOrCodecError(() => decodeMessage(body, version));
  if (msg !== undefined) assert.deepStrictEqual(decodeMessage(encodeMessage(msg, version), version), msg);
}

/** Feeds `stream` to a FrameDecoder in the given chunk sizes; returns or throws CodecError only. */
function checkFrames(stream: Uint8Array, cuts: number[], maxLength: number): void {
  const d = new FrameDecoder({ maxLength });
  let pos = 0;
  for (const cut of [...cuts, stream.length]) {
    const end = Math.min(stream.length, pos + cut);
    const bodies = returnsOrCodecError(() => d.push(stream.subarray(pos, end)));
    if (bodies === undefined) {
      // After a failure the decoder stays failed.
      assert.throws(() => d.push(Uint8Array.of(0)), CodecError);
      return;
    }
    for (const body of bodies) assert.ok(body.length <= maxLength);
    pos = end;
  }
  assert.ok(d.bufferedBytes <= stream.length);
}

// ---- properties -------------------------------------------------------------------------------

describe('fuzz: hostile input gives CodecError or a value, never another exception', () => {
  it('decodeMessage on random bytes (12k)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 160 }), versionArb, (body, version) =>
        checkDecode(body, version),
      ),
      run(12_000),
    );
  });

  it('decodeMessage on mutated valid messages (12k)', () => {
    fc.assert(
      fc.property(
        versionedMessage,
        fc.array(mutationArb, { minLength: 1, maxLength: 4 }),
        ({ version, msg }, m) => checkDecode(mutate(encodeMessage(msg, version), m), version),
      ),
      run(12_000),
    );
  });

  it('FrameDecoder on random streams and mutated framed messages (5k)', () => {
    const stream = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc
        .tuple(fc.array(versionedMessage, { maxLength: 3 }), fc.array(mutationArb, { maxLength: 3 }))
        .map(([msgs, m]) =>
          mutate(Uint8Array.from(msgs.flatMap((x) => [...encodeFramedMessage(x.msg, x.version)])), m),
        ),
    );
    fc.assert(
      fc.property(
        stream,
        fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 8 }),
        fc.nat(300),
        checkFrames,
      ),
      run(5_000),
    );
  });

  it('canonical decoders and timestampOnlyDifference on random and mutated sign bytes (6k)', () => {
    const signBytes = fc.oneof(
      fc.uint8Array({ maxLength: 120 }),
      fc
        .tuple(
          fc.string({ maxLength: 12 }),
          voteArb('v0.38'),
          fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
        )
        .map(([chain, v, m]) => mutate(voteSignBytes(chain, v), m)),
      fc
        .tuple(
          fc.string({ maxLength: 12 }),
          proposalArb,
          fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
        )
        .map(([chain, p, m]) => mutate(proposalSignBytes(chain, p), m)),
    );
    fc.assert(
      fc.property(signBytes, signBytes, (a, b) => {
        returnsOrCodecError(() => decodeCanonicalVote(a));
        returnsOrCodecError(() => decodeCanonicalProposal(a));
        // Never throws at all: undecodable input is simply "not a timestamp-only difference".
        timestampOnlyDifference('vote', a, b);
        timestampOnlyDifference('proposal', a, b);
      }),
      run(6_000),
    );
  });
});

describe('fuzz: valid messages round-trip', () => {
  for (const version of PROTOCOL_VERSIONS) {
    it(`every message kind in ${version} (2k)`, () => {
      fc.assert(
        fc.property(messageArb(version), (msg) => {
          assert.deepStrictEqual(decodeMessage(encodeMessage(msg, version), version), msg);
        }),
        run(2_000),
      );
    });
  }

  it('framed messages split at random points (2k)', () => {
    fc.assert(
      fc.property(
        versionArb.chain((version) =>
          fc.tuple(fc.constant(version), fc.array(messageArb(version), { maxLength: 4 })),
        ),
        fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 10 }),
        ([version, msgs], cuts) => {
          const stream = Uint8Array.from(msgs.flatMap((m) => [...encodeFramedMessage(m, version)]));
          const d = new FrameDecoder({ maxLength: 100_000 });
          const bodies: Uint8Array[] = [];
          let pos = 0;
          for (const cut of [...cuts, stream.length]) {
            const end = Math.min(stream.length, pos + cut);
            bodies.push(...d.push(stream.subarray(pos, end)));
            pos = end;
          }
          assert.equal(d.bufferedBytes, 0);
          assert.deepStrictEqual(
            bodies.map((b) => decodeMessage(b, version)),
            msgs,
          );
        },
      ),
      run(2_000),
    );
  });
});

describe('fuzz: canonical sign bytes', () => {
  const chainId = fc.string({ unit: 'binary', maxLength: 16 });

  it('votes decode back and a timestamp change alone is recognised (3k)', () => {
    fc.assert(
      fc.property(chainId, voteArb('v0.38'), timestamp, (chain, vote, ts) => {
        const stored = voteSignBytes(chain, vote);
        const cv = decodeCanonicalVote(stored);
        assert.equal(cv.type, vote.type);
        assert.equal(cv.height, vote.height);
        assert.equal(cv.round, BigInt(vote.round));
        assert.equal(cv.chainId, chain);
        assert.deepStrictEqual(cv.timestamp, vote.timestamp);
        const requested = voteSignBytes(chain, { ...vote, timestamp: ts });
        assert.deepStrictEqual(timestampOnlyDifference('vote', stored, requested), vote.timestamp);
      }),
      run(3_000),
    );
  });

  it('proposals: any change outside the timestamp is refused (3k)', () => {
    const change = fc.oneof(
      fc.record({ height: int64 }, plain),
      fc.record({ round: int32 }, plain),
      fc.record({ polRound: int32 }, plain),
      fc.record({ blockId }, plain),
    );
    fc.assert(
      fc.property(chainId, proposalArb, change, timestamp, (chain, p, delta, ts) => {
        const stored = proposalSignBytes(chain, p);
        const changed: Proposal = { ...p, ...delta, timestamp: ts };
        const differs = !Buffer.from(proposalSignBytes(chain, { ...changed, timestamp: p.timestamp })).equals(
          stored,
        );
        const result = timestampOnlyDifference('proposal', stored, proposalSignBytes(chain, changed));
        if (differs) assert.equal(result, undefined);
        else assert.deepStrictEqual(result, p.timestamp);
      }),
      run(3_000),
    );
  });
});
