/**
 * Upstream privval message vectors (shared/vectors/privval-messages.json, Go's TestPrivvalVectors)
 * in both directions for every wire family: decode(hex) deep-equals the expected message and
 * encode(expected) reproduces Go's bytes.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { sha256 } from '@noble/hashes/sha2.js';
import { decodeMessage, encodeMessage, zeroProposal, zeroVote } from '../../../src/cometbft/messages.ts';
import type {
  BlockID,
  PrivvalMessage,
  Proposal,
  ProtocolVersion,
  RemoteSignerError,
  Timestamp,
  Vote,
} from '../../../src/cometbft/types.ts';

interface VectorFile {
  families: {
    applies_to: string;
    vote: { type: number; height: number; round: number; extension_utf8?: string };
    cases: { name: string; message_hex: string }[];
  }[];
}

const vectors = JSON.parse(
  readFileSync(new URL('../../vectors/upstream/privval-messages.json', import.meta.url), 'utf8'),
) as VectorFile;

const hex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

// common_inputs of the vector file, built from their stated derivations.
const timestamp: Timestamp = { seconds: 1570983284n, nanos: 0 };
const blockId = (): BlockID => ({
  hash: sha256(utf8('blockID_hash')),
  partSetHeader: { total: 1000000, hash: sha256(utf8('blockID_part_set_header_hash')) },
});
const validatorAddress = sha256(utf8('validator_address')).slice(0, 20);
const pubKeyBytes = hex('556a436f1218d30942efe798420f51dc9b6a311b929c578257457d05c5fcf230');
const remoteError: RemoteSignerError = { code: 1, description: "it's a error" };
const proposal = (): Proposal => ({
  type: 1,
  height: 3n,
  round: 2,
  polRound: 2,
  blockId: blockId(),
  timestamp: { ...timestamp },
  signature: utf8("it's a signature"),
});

function versionsOf(appliesTo: string): ProtocolVersion[] {
  if (appliesTo.startsWith('v0.34')) return ['v0.34', 'v0.37'];
  if (appliesTo.startsWith('v0.38')) return ['v0.38'];
  if (appliesTo.startsWith('v1.0')) return ['v1.0'];
  throw new Error(`unexpected family ${appliesTo}`);
}

function expectedMessage(name: string, vote: Vote, version: ProtocolVersion): PrivvalMessage {
  switch (name) {
    case 'ping request':
      return { kind: 'pingRequest' };
    case 'ping response':
      return { kind: 'pingResponse' };
    case 'pubKey request':
      return { kind: 'pubKeyRequest', chainId: '' };
    case 'pubKey response':
      return { kind: 'pubKeyResponse', pubKey: { type: 'ed25519', bytes: pubKeyBytes } };
    case 'pubKey response with error':
      return { kind: 'pubKeyResponse', error: remoteError };
    case 'Vote Request':
      return { kind: 'signVoteRequest', vote, chainId: '', skipExtensionSigning: false };
    case 'Vote Response':
      return { kind: 'signedVoteResponse', vote };
    case 'Vote Response with error':
      return { kind: 'signedVoteResponse', vote: zeroVote(), error: remoteError };
    case 'Proposal Request':
      return { kind: 'signProposalRequest', proposal: proposal(), chainId: '' };
    case 'Proposal Response':
      return { kind: 'signedProposalResponse', proposal: proposal() };
    case 'Proposal Response with error':
      return { kind: 'signedProposalResponse', proposal: zeroProposal(), error: remoteError };
    default:
      throw new Error(`no expectation for case ${name} (${version})`);
  }
}

describe('privval-messages.json (upstream TestPrivvalVectors)', () => {
  for (const family of vectors.families) {
    for (const version of versionsOf(family.applies_to)) {
      const vote: Vote = {
        ...zeroVote(),
        type: family.vote.type,
        height: BigInt(family.vote.height),
        round: family.vote.round,
        blockId: blockId(),
        timestamp: { ...timestamp },
        validatorAddress,
        validatorIndex: 56789,
        extension:
          family.vote.extension_utf8 === undefined ? new Uint8Array(0) : utf8(family.vote.extension_utf8),
      };
      assert.equal(family.cases.length, 11);
      for (const c of family.cases) {
        const expected = expectedMessage(c.name, vote, version);
        it(`${version} ${c.name}: decode`, () => {
          assert.deepStrictEqual(decodeMessage(hex(c.message_hex), version), expected);
        });
        it(`${version} ${c.name}: encode reproduces Go's bytes`, () => {
          assert.equal(toHex(encodeMessage(expected, version)), c.message_hex);
        });
      }
    }
  }
});

describe('cross-family reading of the vectors', () => {
  const family = (prefix: string) => {
    const f = vectors.families.find((x) => x.applies_to.startsWith(prefix));
    assert.ok(f);
    return f;
  };
  const caseHex = (prefix: string, name: string): Uint8Array => {
    const c = family(prefix).cases.find((x) => x.name === name);
    assert.ok(c);
    return hex(c.message_hex);
  };

  it('a v0.38 vote read as v0.34 skips the extension field (unknown in that family)', () => {
    const msg = decodeMessage(caseHex('v0.38', 'Vote Request'), 'v0.34');
    assert.equal(msg.kind, 'signVoteRequest');
    assert.ok(msg.kind === 'signVoteRequest' && msg.vote);
    assert.equal(msg.vote.extension.length, 0);
    assert.equal(msg.vote.validatorIndex, 56789);
  });

  it('a v1.0 pubkey response read as v0.38 carries no key (fields 3/4 are unknown there)', () => {
    assert.deepStrictEqual(decodeMessage(caseHex('v1.0', 'pubKey response'), 'v0.38'), {
      kind: 'pubKeyResponse',
    });
  });

  it('a v0.38 pubkey response read as v1.0 carries no key (field 1 is reserved there)', () => {
    assert.deepStrictEqual(decodeMessage(caseHex('v0.38', 'pubKey response'), 'v1.0'), {
      kind: 'pubKeyResponse',
    });
  });
});
