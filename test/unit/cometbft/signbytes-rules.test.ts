/**
 * Sign-bytes rules beyond the vectors: hash-length validation, nil block ids, canonical decoding
 * errors, and timestampOnlyDifference (the FilePV same-HRS rule, spec §7.2 step 4 / §7.3).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CodecError, type CodecErrorCode } from '../../../src/cometbft/errors.ts';
import { zeroProposal, zeroVote } from '../../../src/cometbft/messages.ts';
import {
  decodeCanonicalProposal,
  decodeCanonicalVote,
  isZeroBlockId,
  proposalSignBytes,
  timestampOnlyDifference,
  voteExtensionSignBytes,
  voteSignBytes,
} from '../../../src/cometbft/signbytes.ts';
import { type BlockID, GO_ZERO_TIME, type Proposal, type Vote } from '../../../src/cometbft/types.ts';

const hex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h.replaceAll(' ', ''), 'hex'));

function throwsCodec(fn: () => unknown, code: CodecErrorCode): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CodecError, `expected CodecError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

const blockId = (fill = 1, total = 3): BlockID => ({
  hash: new Uint8Array(32).fill(fill),
  partSetHeader: { total, hash: new Uint8Array(32).fill(fill + 1) },
});
const nilBlockId = (): BlockID => ({
  hash: new Uint8Array(0),
  partSetHeader: { total: 0, hash: new Uint8Array(0) },
});

const vote = (over: Partial<Vote> = {}): Vote => ({
  ...zeroVote(),
  type: 2,
  height: 100n,
  round: 1,
  blockId: blockId(),
  timestamp: { seconds: 1_700_000_000n, nanos: 5 },
  ...over,
});
const proposal = (over: Partial<Proposal> = {}): Proposal => ({
  ...zeroProposal(),
  type: 32,
  height: 100n,
  round: 1,
  polRound: -1,
  blockId: blockId(),
  timestamp: { seconds: 1_700_000_000n, nanos: 5 },
  ...over,
});

describe('isZeroBlockId', () => {
  it('is true only with no hash and an all-zero part-set header', () => {
    assert.equal(isZeroBlockId(nilBlockId()), true);
    assert.equal(isZeroBlockId({ ...nilBlockId(), hash: new Uint8Array(32) }), false);
    assert.equal(
      isZeroBlockId({ ...nilBlockId(), partSetHeader: { total: 1, hash: new Uint8Array(0) } }),
      false,
    );
    assert.equal(
      isZeroBlockId({ ...nilBlockId(), partSetHeader: { total: 0, hash: new Uint8Array(32) } }),
      false,
    );
  });
});

describe('hash lengths (Go panics while canonicalising)', () => {
  for (const len of [1, 20, 31, 33, 64]) {
    it(`a ${len}-byte block hash or part-set hash is INVALID_FIELD`, () => {
      const badHash: BlockID = { ...blockId(), hash: new Uint8Array(len) };
      const badPsh: BlockID = { ...blockId(), partSetHeader: { total: 1, hash: new Uint8Array(len) } };
      for (const b of [badHash, badPsh]) {
        throwsCodec(() => voteSignBytes('c', vote({ blockId: b })), 'INVALID_FIELD');
        throwsCodec(() => proposalSignBytes('c', proposal({ blockId: b })), 'INVALID_FIELD');
      }
    });
  }

  it('the extension sign bytes do not involve the block id', () => {
    const b: BlockID = { ...blockId(), hash: new Uint8Array(5) };
    assert.deepStrictEqual(
      voteExtensionSignBytes('c', vote({ blockId: b })),
      voteExtensionSignBytes('c', vote()),
    );
  });

  it('out-of-range values are INVALID_FIELD', () => {
    throwsCodec(() => voteSignBytes('c', vote({ timestamp: { seconds: 0n, nanos: -1 } })), 'INVALID_FIELD');
    throwsCodec(() => proposalSignBytes('c', proposal({ polRound: 2 ** 31 })), 'INVALID_FIELD');
    throwsCodec(() => voteSignBytes('c', vote({ round: 0.5 })), 'INVALID_FIELD');
    throwsCodec(() => voteExtensionSignBytes('c', vote({ round: -(2 ** 31) - 1 })), 'INVALID_FIELD');
    throwsCodec(() => voteExtensionSignBytes('c', vote({ height: 1n << 63n })), 'INVALID_FIELD');
  });
});

describe('decodeCanonicalVote / decodeCanonicalProposal errors', () => {
  const good = voteSignBytes('chain', vote());
  it('empty input, a cut prefix and a short body are TRUNCATED', () => {
    throwsCodec(() => decodeCanonicalVote(new Uint8Array(0)), 'TRUNCATED');
    throwsCodec(() => decodeCanonicalVote(hex('80')), 'TRUNCATED');
    throwsCodec(() => decodeCanonicalVote(good.subarray(0, good.length - 1)), 'TRUNCATED');
  });
  it('trailing bytes after the prefixed message are INVALID_FIELD', () => {
    throwsCodec(() => decodeCanonicalVote(Uint8Array.of(...good, 0)), 'INVALID_FIELD');
  });
  it('a vote body read as a proposal fails on wire types', () => {
    throwsCodec(() => decodeCanonicalProposal(good), 'BAD_WIRE_TYPE');
  });
  it('height as varint instead of sfixed64 is BAD_WIRE_TYPE', () => {
    throwsCodec(() => decodeCanonicalVote(hex('02 10 01')), 'BAD_WIRE_TYPE');
  });
  it('an absent timestamp decodes as Go zero time, an empty one as the epoch', () => {
    assert.deepStrictEqual(decodeCanonicalVote(hex('02 08 01')).timestamp, GO_ZERO_TIME);
    assert.deepStrictEqual(decodeCanonicalVote(hex('04 08 01 2a 00')).timestamp, { seconds: 0n, nanos: 0 });
  });
});

describe('timestampOnlyDifference: votes', () => {
  const stored = vote();
  const storedBytes = voteSignBytes('chain', stored);

  it('identical bytes return the stored timestamp', () => {
    assert.deepStrictEqual(timestampOnlyDifference('vote', storedBytes, storedBytes), stored.timestamp);
  });

  it('a different timestamp alone returns the stored timestamp, not the requested one', () => {
    const cases = [
      { seconds: 1_700_000_001n, nanos: 5 },
      { seconds: 1_700_000_000n, nanos: 6 },
      { ...GO_ZERO_TIME },
      { seconds: 0n, nanos: 0 },
    ];
    for (const timestamp of cases) {
      const requested = voteSignBytes('chain', vote({ timestamp }));
      assert.deepStrictEqual(timestampOnlyDifference('vote', storedBytes, requested), stored.timestamp);
    }
  });

  it('fields outside the sign bytes do not matter', () => {
    const requested = voteSignBytes(
      'chain',
      vote({ validatorIndex: 9, signature: new Uint8Array(64), extension: Uint8Array.of(1) }),
    );
    assert.deepStrictEqual(timestampOnlyDifference('vote', storedBytes, requested), stored.timestamp);
  });

  it('any other difference returns undefined', () => {
    const others: [string, Uint8Array][] = [
      ['type', voteSignBytes('chain', vote({ type: 1 }))],
      ['height', voteSignBytes('chain', vote({ height: 101n }))],
      ['round', voteSignBytes('chain', vote({ round: 2 }))],
      [
        'block hash',
        voteSignBytes('chain', vote({ blockId: { ...blockId(), hash: new Uint8Array(32).fill(9) } })),
      ],
      ['part-set total', voteSignBytes('chain', vote({ blockId: blockId(1, 4) }))],
      [
        'part-set hash',
        voteSignBytes(
          'chain',
          vote({ blockId: { ...blockId(), partSetHeader: { total: 3, hash: new Uint8Array(32) } } }),
        ),
      ],
      ['nil block id', voteSignBytes('chain', vote({ blockId: nilBlockId() }))],
      ['chain id', voteSignBytes('chain2', vote())],
      ['empty chain id', voteSignBytes('', vote())],
    ];
    for (const [what, requested] of others) {
      assert.equal(timestampOnlyDifference('vote', storedBytes, requested), undefined, what);
      assert.equal(timestampOnlyDifference('vote', requested, storedBytes), undefined, what);
    }
  });

  it('an absent block id differs from a present empty one (protobuf equality)', () => {
    const absent = hex('0d 08 02 11 6400000000000000 2a 00');
    const presentEmpty = hex('0f 08 02 11 6400000000000000 22 00 2a 00');
    assert.equal(timestampOnlyDifference('vote', absent, presentEmpty), undefined);
    assert.deepStrictEqual(timestampOnlyDifference('vote', presentEmpty, presentEmpty), {
      seconds: 0n,
      nanos: 0,
    });
  });

  it('undecodable input returns undefined', () => {
    assert.equal(timestampOnlyDifference('vote', new Uint8Array(0), storedBytes), undefined);
    assert.equal(timestampOnlyDifference('vote', storedBytes, storedBytes.subarray(1)), undefined);
    assert.equal(timestampOnlyDifference('vote', Uint8Array.of(...storedBytes, 0), storedBytes), undefined);
    assert.equal(
      timestampOnlyDifference('vote', storedBytes, proposalSignBytes('chain', proposal())),
      undefined,
    );
  });

  it('the returned timestamp is a fresh object', () => {
    const a = timestampOnlyDifference('vote', storedBytes, storedBytes);
    assert.ok(a);
    a.nanos = 77;
    assert.deepStrictEqual(timestampOnlyDifference('vote', storedBytes, storedBytes), stored.timestamp);
  });
});

describe('timestampOnlyDifference: proposals', () => {
  const stored = proposal();
  const storedBytes = proposalSignBytes('chain', stored);

  it('a different timestamp alone returns the stored timestamp', () => {
    const requested = proposalSignBytes('chain', proposal({ timestamp: { seconds: 5n, nanos: 0 } }));
    assert.deepStrictEqual(timestampOnlyDifference('proposal', storedBytes, requested), stored.timestamp);
  });

  it('the proposal type field is not signed (always 32)', () => {
    const requested = proposalSignBytes('chain', proposal({ type: 1 }));
    assert.deepStrictEqual(timestampOnlyDifference('proposal', storedBytes, requested), stored.timestamp);
  });

  it('pol_round, height, round, block id or chain id differences return undefined', () => {
    const others = [
      proposalSignBytes('chain', proposal({ polRound: 0 })),
      proposalSignBytes('chain', proposal({ polRound: 1 })),
      proposalSignBytes('chain', proposal({ height: 99n })),
      proposalSignBytes('chain', proposal({ round: 0 })),
      proposalSignBytes('chain', proposal({ blockId: nilBlockId() })),
      proposalSignBytes('other', proposal()),
    ];
    for (const requested of others) {
      assert.equal(timestampOnlyDifference('proposal', storedBytes, requested), undefined);
    }
  });

  it('vote sign bytes are not a proposal', () => {
    assert.equal(timestampOnlyDifference('proposal', storedBytes, voteSignBytes('chain', vote())), undefined);
  });
});
