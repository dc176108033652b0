/**
 * decodeMessage / encodeMessage beyond the upstream vectors: gogoproto decoding semantics,
 * version rules, and every class of malformed input mapped to its CodecError code.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CodecError, type CodecErrorCode } from '../../../src/cometbft/errors.ts';
import { decodeMessage, encodeMessage, zeroProposal, zeroVote } from '../../../src/cometbft/messages.ts';
import {
  GO_ZERO_TIME,
  PROTOCOL_VERSIONS,
  type PrivvalMessage,
  type ProtocolVersion,
  type Vote,
} from '../../../src/cometbft/types.ts';

/** Hex with optional spaces for readability. */
const hex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h.replaceAll(' ', ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function throwsCodec(fn: () => unknown, code: CodecErrorCode): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CodecError, `expected CodecError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

function decodeVote(voteHex: string, version: ProtocolVersion = 'v0.38'): Vote {
  const body = hex(voteHex);
  const req = Uint8Array.of(0x0a, body.length, ...body);
  const msg = decodeMessage(Uint8Array.of(0x1a, req.length, ...req), version);
  assert.ok(msg.kind === 'signVoteRequest' && msg.vote !== undefined);
  return msg.vote;
}

describe('decodeMessage: gogoproto semantics', () => {
  it('a zero-length body is the empty Message', () => {
    for (const v of PROTOCOL_VERSIONS)
      assert.deepStrictEqual(decodeMessage(new Uint8Array(0), v), { kind: 'empty' });
  });

  it('an absent vote timestamp decodes as Go zero time, a present empty one as the epoch', () => {
    assert.deepStrictEqual(decodeVote('08 01').timestamp, GO_ZERO_TIME);
    assert.deepStrictEqual(decodeVote('08 01 2a 00').timestamp, { seconds: 0n, nanos: 0 });
  });

  it('an absent vote in a sign request stays absent; in a response it is the zero Vote', () => {
    assert.deepStrictEqual(decodeMessage(hex('1a 00'), 'v0.38'), {
      kind: 'signVoteRequest',
      chainId: '',
      skipExtensionSigning: false,
    });
    assert.deepStrictEqual(decodeMessage(hex('22 00'), 'v0.38'), {
      kind: 'signedVoteResponse',
      vote: zeroVote(),
    });
    assert.deepStrictEqual(decodeMessage(hex('2a 00'), 'v0.38'), {
      kind: 'signProposalRequest',
      chainId: '',
    });
    assert.deepStrictEqual(decodeMessage(hex('32 00'), 'v0.38'), {
      kind: 'signedProposalResponse',
      proposal: zeroProposal(),
    });
  });

  it('negative heights and rounds are representable and decode', () => {
    // height -5 (10-byte varint), round -1 (10-byte varint)
    const vote = decodeVote('10 fb ff ff ff ff ff ff ff ff 01 18 ff ff ff ff ff ff ff ff ff 01');
    assert.equal(vote.height, -5n);
    assert.equal(vote.round, -1);
  });

  it('unknown fields inside sub-messages are skipped, whatever their wire type', () => {
    // field 15 varint, field 16 fixed64, field 17 length-delimited, field 18 fixed32, then type=2
    const vote = decodeVote('78 05 81 01 0102030405060708 8a 01 02 abcd 95 01 01020304 08 02');
    assert.equal(vote.type, 2);
    const ping = decodeMessage(hex('3a 04 08 01 10 02'), 'v0.34');
    assert.deepStrictEqual(ping, { kind: 'pingRequest' });
  });

  it('repeated sub-message fields merge, repeated scalars and oneof cases replace', () => {
    // block_id twice: hash from the first, part_set_header.total from the second
    const vote = decodeVote(`22 22 0a 20 ${'11'.repeat(32)} 22 04 12 02 08 07 08 01 08 02`);
    assert.deepStrictEqual(vote.blockId.hash, new Uint8Array(32).fill(0x11));
    assert.equal(vote.blockId.partSetHeader.total, 7);
    assert.equal(vote.type, 2);
    // Two oneof cases: the last one wins.
    assert.deepStrictEqual(decodeMessage(hex('3a 00 42 00'), 'v0.38'), { kind: 'pingResponse' });
  });

  it('SignVoteRequest.skip_extension_signing is read in v1.0 only', () => {
    const body = hex('1a 02 18 01');
    assert.deepStrictEqual(decodeMessage(body, 'v1.0'), {
      kind: 'signVoteRequest',
      chainId: '',
      skipExtensionSigning: true,
    });
    assert.deepStrictEqual(decodeMessage(body, 'v0.38'), {
      kind: 'signVoteRequest',
      chainId: '',
      skipExtensionSigning: false,
    });
  });

  it('v1.0 PubKeyResponse: key types and inconsistent fields', () => {
    assert.deepStrictEqual(decodeMessage(hex('12 0b 22 09 736563703235366b31'), 'v1.0'), {
      kind: 'pubKeyResponse',
      pubKey: { type: 'secp256k1', bytes: new Uint8Array(0) },
    });
    throwsCodec(() => decodeMessage(hex('12 0b 22 09 626c7331325f333831'), 'v1.0'), 'UNSUPPORTED');
    throwsCodec(() => decodeMessage(hex('12 03 1a 01 00'), 'v1.0'), 'INVALID_FIELD');
  });

  it('v0.34 PubKeyResponse with a secp256k1 key', () => {
    const key = '02'.padEnd(66, 'ab');
    assert.deepStrictEqual(decodeMessage(hex(`12 25 0a 23 12 21 ${key}`), 'v0.34'), {
      kind: 'pubKeyResponse',
      pubKey: { type: 'secp256k1', bytes: hex(key) },
    });
  });

  it('decoded byte fields are plain Uint8Arrays that do not alias a Buffer input', () => {
    const input = Buffer.from(hex('4a 03 0a 01 aa'));
    const msg = decodeMessage(input, 'v1.0');
    assert.ok(msg.kind === 'signBytesRequest');
    assert.equal(Object.getPrototypeOf(msg.value), Uint8Array.prototype);
    input[4] = 0xbb;
    assert.deepStrictEqual(msg.value, Uint8Array.of(0xaa));
  });
});

describe('decodeMessage: malformed input', () => {
  const cases: [string, string, CodecErrorCode, ProtocolVersion?][] = [
    ['case length beyond the end', '1a 05 0a', 'TRUNCATED'],
    ['missing case length', '1a', 'TRUNCATED'],
    ['key varint cut off', '80', 'TRUNCATED'],
    ['sfixed64-size unknown field cut off', '3a 03 09 01 02', 'TRUNCATED'],
    ['key varint of 10 bytes overflowing 64 bits', 'ff ff ff ff ff ff ff ff ff 7f', 'BAD_VARINT'],
    ['11-byte varint', '3a 0b 08 ff ff ff ff ff ff ff ff ff ff', 'BAD_VARINT'],
    ['field 9 before v1.0', '4a 00', 'UNKNOWN_MESSAGE', 'v0.38'],
    ['field 10 before v1.0', '52 00', 'UNKNOWN_MESSAGE', 'v0.34'],
    ['field 11', '5a 00', 'UNKNOWN_MESSAGE', 'v1.0'],
    ['unknown case with varint wire type', '58 01', 'UNKNOWN_MESSAGE', 'v1.0'],
    ['known case with varint wire type', '38 00', 'BAD_WIRE_TYPE'],
    ['Vote.height as length-delimited', '1a 06 0a 04 12 02 00 00', 'BAD_WIRE_TYPE'],
    ['Vote.block_id as varint', '1a 04 0a 02 20 01', 'BAD_WIRE_TYPE'],
    ['unknown group field', '3a 01 0b', 'BAD_WIRE_TYPE'],
    ['wire type 6', '3a 01 0e', 'BAD_WIRE_TYPE'],
    ['field number 0', '00', 'INVALID_FIELD'],
    ['field number above 2^29-1', '3a 05 80 80 80 80 10', 'INVALID_FIELD'],
    ['round beyond int32', '1a 08 0a 06 18 80 80 80 80 08', 'INVALID_FIELD'],
    ['PartSetHeader.total beyond uint32', '1a 0c 0a 0a 22 08 12 06 08 80 80 80 80 10', 'INVALID_FIELD'],
    ['nanos = 1e9', '1a 0a 0a 08 2a 06 10 80 94 eb dc 03', 'INVALID_FIELD'],
    ['negative nanos', '1a 0f 0a 0d 2a 0b 10 ff ff ff ff ff ff ff ff ff 01', 'INVALID_FIELD'],
    ['seconds before year 1', '1a 0f 0a 0d 2a 0b 08 ff 91 b8 c3 98 fe ff ff ff 01', 'INVALID_FIELD'],
    ['seconds after year 9999', '1a 0b 0a 09 2a 07 08 80 83 d1 ff af 07', 'INVALID_FIELD'],
    ['chain id not UTF-8', '0a 03 0a 01 ff', 'INVALID_FIELD'],
    ['pubkey type not UTF-8', '12 03 22 01 c3', 'INVALID_FIELD', 'v1.0'],
  ];
  for (const [name, h, code, version] of cases) {
    it(`${name} -> ${code}`, () => throwsCodec(() => decodeMessage(hex(h), version ?? 'v0.38'), code));
  }

  it('an unknown protocol version is UNSUPPORTED', () => {
    throwsCodec(() => decodeMessage(hex('3a 00'), 'v2.0' as ProtocolVersion), 'UNSUPPORTED');
  });
});

describe('encodeMessage: version rules and validation', () => {
  const vote = (): Vote => ({ ...zeroVote(), type: 2, height: 5n, timestamp: { seconds: 1n, nanos: 0 } });

  it('cases 9/10 are v1.0 only', () => {
    const req: PrivvalMessage = { kind: 'signBytesRequest', value: Uint8Array.of(1) };
    const res: PrivvalMessage = { kind: 'signBytesResponse', signature: Uint8Array.of(2) };
    for (const v of ['v0.34', 'v0.37', 'v0.38'] as const) {
      throwsCodec(() => encodeMessage(req, v), 'UNSUPPORTED');
      throwsCodec(() => encodeMessage(res, v), 'UNSUPPORTED');
    }
    assert.equal(toHex(encodeMessage(req, 'v1.0')), '4a030a0101');
    assert.equal(toHex(encodeMessage(res, 'v1.0')), '52030a0102');
  });

  it('vote extension fields do not exist before v0.38', () => {
    const v = { ...vote(), extensionSignature: Uint8Array.of(1) };
    throwsCodec(() => encodeMessage({ kind: 'signedVoteResponse', vote: v }, 'v0.37'), 'UNSUPPORTED');
    assert.match(toHex(encodeMessage({ kind: 'signedVoteResponse', vote: v }, 'v0.38')), /520101$/);
  });

  it('skip_extension_signing exists in v1.0 only', () => {
    const msg: PrivvalMessage = { kind: 'signVoteRequest', chainId: '', skipExtensionSigning: true };
    throwsCodec(() => encodeMessage(msg, 'v0.38'), 'UNSUPPORTED');
    assert.equal(toHex(encodeMessage(msg, 'v1.0')), '1a021801');
  });

  it('non-nullable sub-messages are always written (spec §5.4 zero Vote encoding)', () => {
    const bytes = encodeMessage({ kind: 'signedVoteResponse', vote: zeroVote() }, 'v0.38');
    assert.equal(toHex(bytes), '2213' + '0a11' + '22021200' + '2a0b088092b8c398feffffff01');
    assert.equal(toHex(encodeMessage({ kind: 'pubKeyResponse' }, 'v0.34')), '12020a00');
    assert.equal(toHex(encodeMessage({ kind: 'pubKeyResponse' }, 'v1.0')), '1200');
  });

  it('pol_round -1 is a 10-byte varint', () => {
    const msg: PrivvalMessage = {
      kind: 'signProposalRequest',
      proposal: { ...zeroProposal(), polRound: -1, timestamp: { seconds: 0n, nanos: 0 } },
      chainId: '',
    };
    const bytes = encodeMessage(msg, 'v0.38');
    assert.equal(toHex(bytes), '2a130a11' + '20ffffffffffffffffff01' + '2a021200' + '3200');
    assert.deepStrictEqual(decodeMessage(bytes, 'v0.38'), msg);
  });

  it('out-of-range values are INVALID_FIELD, never silently wrapped', () => {
    const bad: Vote[] = [
      { ...vote(), round: 2 ** 31 },
      { ...vote(), validatorIndex: 1.5 },
      { ...vote(), height: 1n << 63n },
      { ...vote(), timestamp: { seconds: 0n, nanos: 1_000_000_000 } },
      { ...vote(), timestamp: { seconds: GO_ZERO_TIME.seconds - 1n, nanos: 0 } },
      {
        ...vote(),
        blockId: { hash: new Uint8Array(0), partSetHeader: { total: -1, hash: new Uint8Array(0) } },
      },
    ];
    for (const v of bad)
      throwsCodec(() => encodeMessage({ kind: 'signedVoteResponse', vote: v }, 'v0.38'), 'INVALID_FIELD');
  });

  it('an unknown key type cannot be encoded', () => {
    const msg = { kind: 'pubKeyResponse', pubKey: { type: 'sr25519', bytes: new Uint8Array(32) } } as unknown;
    throwsCodec(() => encodeMessage(msg as PrivvalMessage, 'v0.38'), 'UNSUPPORTED');
    throwsCodec(() => encodeMessage(msg as PrivvalMessage, 'v1.0'), 'UNSUPPORTED');
  });

  it('the empty Message encodes to zero bytes', () => {
    assert.equal(encodeMessage({ kind: 'empty' }, 'v1.0').length, 0);
  });
});
