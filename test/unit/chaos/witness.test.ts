/**
 * The chaos witness's own pieces: the independent canonical decoder (cross-checked against the
 * repository's sign-bytes vectors and against the product's encoder on random messages), the
 * pkcs11-spy log parser, and the checker's verdicts on hand-made histories.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { proposalSignBytes, voteExtensionSignBytes, voteSignBytes } from '../../../src/cometbft/signbytes.ts';
import type { BlockID, Vote } from '../../../src/cometbft/types.ts';
import { decodeCanonical, STEP } from '../../chaos/harness/witness/canonical.ts';
import { check } from '../../chaos/harness/witness/checker.ts';
import { parseSpyLog, type SpySign } from '../../chaos/harness/witness/spy-log.ts';

const hex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const vectors = (path: string): Record<string, unknown> =>
  JSON.parse(readFileSync(new URL(`../../vectors/${path}`, import.meta.url), 'utf8')) as Record<
    string,
    unknown
  >;

interface OwnBlockId {
  hash: string;
  part_set_header: { total: number; hash: string };
}
interface OwnTs {
  seconds: string;
  nanos: number;
}

describe('canonical decoder against the repository vectors', () => {
  const own = vectors('cometbft-own-vectors.json') as {
    vote_sign_bytes: Array<{
      chain_id: string;
      vote: { type: number; height: string; round: number; block_id: OwnBlockId; timestamp: OwnTs };
      sign_bytes_hex: string;
    }>;
    proposal_sign_bytes: Array<{
      chain_id: string;
      proposal: { height: string; round: number; pol_round: number; block_id: OwnBlockId; timestamp: OwnTs };
      sign_bytes_hex: string;
    }>;
    vote_extension_sign_bytes: Array<{
      chain_id: string;
      vote: { height: string; round: number; extension: string };
      sign_bytes_hex: string;
    }>;
  };
  const ts = (t: OwnTs): string => `${t.seconds}.${String(t.nanos).padStart(9, '0')}`;

  it('decodes every own vote vector', () => {
    for (const v of own.vote_sign_bytes) {
      const m = decodeCanonical(hex(v.sign_bytes_hex));
      assert.ok(m !== undefined && m.kind === 'vote', v.sign_bytes_hex);
      assert.equal(m.chainId, v.chain_id);
      assert.equal(m.height, BigInt(v.vote.height));
      assert.equal(m.round, BigInt(v.vote.round));
      assert.equal(m.step, v.vote.type === 1 ? STEP.prevote : STEP.precommit);
      assert.equal(m.timestamp, ts(v.vote.timestamp));
      assert.ok(m.block.includes(v.vote.block_id.hash), 'the block hash is part of the block identity');
    }
  });

  it('decodes every own proposal vector, pol_round included', () => {
    for (const v of own.proposal_sign_bytes) {
      const m = decodeCanonical(hex(v.sign_bytes_hex));
      assert.ok(m !== undefined && m.kind === 'proposal', v.sign_bytes_hex);
      assert.equal(m.chainId, v.chain_id);
      assert.equal(m.height, BigInt(v.proposal.height));
      assert.equal(m.round, BigInt(v.proposal.round));
      assert.equal(m.timestamp, ts(v.proposal.timestamp));
      assert.ok(m.block.endsWith(`/pol${v.proposal.pol_round}`));
    }
  });

  it('decodes every own vote-extension vector', () => {
    for (const v of own.vote_extension_sign_bytes) {
      const m = decodeCanonical(hex(v.sign_bytes_hex));
      assert.ok(m !== undefined && m.kind === 'extension', v.sign_bytes_hex);
      assert.equal(m.chainId, v.chain_id);
      assert.equal(m.height, BigInt(v.vote.height));
      assert.equal(m.round, BigInt(v.vote.round));
      assert.equal(m.extension, v.vote.extension);
    }
  });

  it('decodes the upstream CometBFT prevote/precommit vectors and rejects type 0', () => {
    const up = vectors('upstream/vote-sign-bytes.json') as {
      cases: Array<{ chain_id: string; vote: unknown; sign_bytes_hex: string }>;
    };
    let decoded = 0;
    for (const c of up.cases) {
      const m = decodeCanonical(hex(c.sign_bytes_hex));
      const type = typeof c.vote === 'object' ? (c.vote as { type: number }).type : 0;
      if (type === 0) {
        assert.equal(m, undefined, 'a type-0 vote is no vote a validator signs');
        continue;
      }
      assert.ok(m !== undefined && m.kind === 'vote');
      assert.equal(m.timestamp, '-62135596800.000000000', 'Go zero time');
      decoded++;
    }
    assert.ok(decoded >= 2);
  });

  it('decodes the tendermint-rs cross-check proposals', () => {
    const x = vectors('upstream/crosscheck-sign-bytes-tendermint-rs.json') as {
      vectors: Array<{
        name: string;
        chain_id: string;
        height: number;
        round: number;
        sign_bytes_hex: string;
      }>;
    };
    for (const v of x.vectors) {
      const m = decodeCanonical(hex(v.sign_bytes_hex));
      assert.ok(m !== undefined, v.name);
      assert.equal(m.chainId, v.chain_id);
      assert.equal(m.height, BigInt(v.height));
      assert.equal(m.round, BigInt(v.round));
    }
  });

  it('agrees with the product encoder on random votes, proposals and extensions', () => {
    const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
    const blockId = fc.oneof(
      fc.constant<BlockID>({ hash: new Uint8Array(0), partSetHeader: { total: 0, hash: new Uint8Array(0) } }),
      fc.record({
        hash: bytes(32),
        partSetHeader: fc.record({ total: fc.integer({ min: 1, max: 1000 }), hash: bytes(32) }),
      }),
    );
    const arb = fc.record({
      type: fc.constantFrom(1, 2),
      height: fc.bigInt({ min: 1n, max: (1n << 62n) - 1n }),
      round: fc.integer({ min: 0, max: 1000 }),
      blockId,
      seconds: fc.bigInt({ min: 0n, max: 253_402_300_799n }),
      nanos: fc.integer({ min: 0, max: 999_999_999 }),
      chainId: fc.string({ minLength: 1, maxLength: 40 }),
      extension: fc.uint8Array({ maxLength: 64 }),
      polRound: fc.integer({ min: -1, max: 1000 }),
    });
    fc.assert(
      fc.property(arb, (a) => {
        const vote: Vote = {
          type: a.type,
          height: a.height,
          round: a.round,
          blockId: a.blockId,
          timestamp: { seconds: a.seconds, nanos: a.nanos },
          validatorAddress: new Uint8Array(20),
          validatorIndex: 0,
          signature: new Uint8Array(0),
          extension: a.extension,
          extensionSignature: new Uint8Array(0),
        };
        const v = decodeCanonical(voteSignBytes(a.chainId, vote));
        assert.ok(v?.kind === 'vote');
        assert.deepEqual(
          [v.chainId, v.height, v.round, v.step],
          [a.chainId, a.height, BigInt(a.round), a.type + 1],
        );
        assert.equal(v.timestamp, `${a.seconds}.${String(a.nanos).padStart(9, '0')}`);
        const p = decodeCanonical(
          proposalSignBytes(a.chainId, {
            type: 32,
            height: a.height,
            round: a.round,
            polRound: a.polRound,
            blockId: a.blockId,
            timestamp: vote.timestamp,
            signature: new Uint8Array(0),
          }),
        );
        assert.ok(p?.kind === 'proposal');
        assert.ok(p.block.endsWith(`/pol${a.polRound}`));
        const e = decodeCanonical(voteExtensionSignBytes(a.chainId, vote));
        assert.ok(e?.kind === 'extension');
        assert.equal(e.extension, toHex(a.extension));
        assert.equal(e.chainId, a.chainId);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses what is no canonical message', () => {
    assert.equal(decodeCanonical(new Uint8Array(200).fill(7)), undefined);
    assert.equal(decodeCanonical(new Uint8Array(0)), undefined);
    assert.equal(decodeCanonical(hex('0508021101')), undefined, 'truncated');
  });
});

const SPY_LOG = `
15: C_SignInit
2026-12-04 19:18:44.842
[in] hSession = 0x5
[in] pMechanism->type = CKM_EDDSA
Returned:  0 CKR_OK

16: C_Sign
2026-12-04 19:18:44.842
[in] hSession = 0x5
[in] pData[ulDataLen] 000000001922fdd8 / 18
    00000000  07 07 07 07 07 07 07 07 07 07 07 07 07 07 07 07  ................
    00000010  07 08                                            ..
[out] pSignature[*pulSignatureLen] 0000000019277ca0 / 4
    00000000  A1 F7 BB EC                                      ....
Returned:  0 CKR_OK

17: C_Sign
2026-12-04 19:18:44.843
[in] hSession = 0x5
[in] pData[ulDataLen] 000000001922fdd8 / 2
    00000000  01 02                                            ..
Returned:  5 CKR_GENERAL_ERROR

18: C_Sign
2026-12-04 19:18:44.844
[in] hSession = 0x5
[in] pData[ulDataLen] 000000001922fdd8 / 2
    00000000  03 04                                            ..
`;

describe('pkcs11-spy log parser', () => {
  it('keeps successful signs with their input and output, counts failed and interrupted ones', () => {
    const log = parseSpyLog('x.log', SPY_LOG);
    assert.equal(log.signs.length, 1);
    assert.equal(toHex(log.signs[0]!.data), `${'07'.repeat(17)}08`);
    assert.equal(toHex(log.signs[0]!.signature), 'a1f7bbec');
    assert.equal(log.signs[0]!.seq, 16);
    assert.equal(log.failedSigns, 1);
    assert.equal(log.interruptedSign, true);
  });
});

describe('checker', () => {
  const chain = 'witness-1';
  const block = (tag: string): BlockID => ({
    hash: new Uint8Array(32).fill(tag.charCodeAt(0)),
    partSetHeader: { total: 1, hash: new Uint8Array(32).fill(1) },
  });
  const vote = (
    type: number,
    height: bigint,
    b: BlockID,
    nanos = 0,
    extension = new Uint8Array(0),
  ): Vote => ({
    type,
    height,
    round: 0,
    blockId: b,
    timestamp: { seconds: 1_700_000_000n, nanos },
    validatorAddress: new Uint8Array(20),
    validatorIndex: 0,
    signature: new Uint8Array(0),
    extension,
    extensionSignature: new Uint8Array(0),
  });
  let seq = 0;
  const signed = (data: Uint8Array, file = 'n1.log'): SpySign => ({
    file,
    seq: ++seq,
    time: '',
    session: '0x1',
    data,
    signature: new Uint8Array(64).fill(seq % 256),
  });

  it('finds two blocks at one HRS across two nodes', () => {
    const a = signed(voteSignBytes(chain, vote(1, 5n, block('a'))), 'n1.log');
    const b = signed(voteSignBytes(chain, vote(1, 5n, block('b'))), 'n2.log');
    const v = check([a, b], []);
    assert.equal(v.conflicts.length, 1);
    assert.equal(v.conflicts[0]!.why, 'two different blocks');
    assert.equal(v.undelivered, 2);
  });

  it('finds one block with two timestamps, and two extensions', () => {
    const a = signed(voteSignBytes(chain, vote(2, 6n, block('a'), 1)));
    const b = signed(voteSignBytes(chain, vote(2, 6n, block('a'), 2)));
    const e1 = signed(voteExtensionSignBytes(chain, vote(2, 6n, block('a'), 1, new Uint8Array([1]))));
    const e2 = signed(voteExtensionSignBytes(chain, vote(2, 6n, block('a'), 1, new Uint8Array([2]))));
    const v = check([a, b, e1, e2], []);
    assert.deepEqual(
      v.conflicts.map((c) => c.why),
      [
        'one block with two timestamps (1700000000.000000001 and 1700000000.000000002)',
        'two different vote extensions',
      ],
    );
  });

  it('accepts identical re-signs, other heights and non-canonical signs; matches deliveries', () => {
    const data = voteSignBytes(chain, vote(1, 7n, block('a')));
    const a = signed(data);
    const again = { ...signed(data), signature: a.signature };
    const next = signed(voteSignBytes(chain, vote(1, 8n, block('b'))));
    const selfTest = signed(new Uint8Array(32).fill(9));
    const v = check(
      [a, again, next, selfTest],
      [
        { sentry: 's1', signBytes: data, signature: a.signature },
        { sentry: 's2', signBytes: new Uint8Array([1, 2]), signature: new Uint8Array(64) },
      ],
    );
    assert.deepEqual(v.conflicts, []);
    assert.equal(v.witnessed, 3);
    assert.equal(v.distinct, 2);
    assert.equal(v.other, 1);
    assert.equal(v.undelivered, 1, 'height 8 was never delivered');
    assert.deepEqual(v.unwitnessed, [{ sentry: 's2', data: '0102' }]);
  });
});
