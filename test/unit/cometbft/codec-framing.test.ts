/** uvarint length framing (spec §4): encodeUvarint/decodeUvarint, lengthPrefixed and FrameDecoder. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CodecError, type CodecErrorCode } from '../../../src/cometbft/errors.ts';
import {
  DEFAULT_MAX_MESSAGE_SIZE,
  decodeUvarint,
  encodeFramedMessage,
  encodeUvarint,
  FrameDecoder,
  lengthPrefixed,
} from '../../../src/cometbft/framing.ts';
import { decodeMessage } from '../../../src/cometbft/messages.ts';

const hex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h.replaceAll(' ', ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function throwsCodec(fn: () => unknown, code: CodecErrorCode): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CodecError, `expected CodecError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

describe('uvarint', () => {
  const known: [bigint, string][] = [
    [0n, '00'],
    [1n, '01'],
    [127n, '7f'],
    [128n, '8001'],
    [300n, 'ac02'],
    [10240n, '8050'],
    [(1n << 63n) - 1n, 'ffffffffffffffff7f'],
    [(1n << 64n) - 1n, 'ffffffffffffffffff01'],
  ];
  for (const [value, h] of known) {
    it(`${value} <-> ${h}`, () => {
      assert.equal(toHex(encodeUvarint(value)), h);
      assert.deepStrictEqual(decodeUvarint(hex(h), 0), { value, bytesRead: h.length / 2 });
    });
  }

  it('accepts numbers and reads at an offset', () => {
    assert.equal(toHex(encodeUvarint(300)), 'ac02');
    assert.deepStrictEqual(decodeUvarint(hex('ff ac 02 ff'), 1), { value: 300n, bytesRead: 2 });
  });

  it('accepts non-minimal encodings as Go does', () => {
    assert.deepStrictEqual(decodeUvarint(hex('80 00'), 0), { value: 0n, bytesRead: 2 });
  });

  it('needs more bytes: undefined', () => {
    assert.equal(decodeUvarint(new Uint8Array(0), 0), undefined);
    assert.equal(decodeUvarint(hex('80 80'), 0), undefined);
    assert.equal(decodeUvarint(hex('ff ff ff ff ff ff ff ff ff'), 0), undefined);
  });

  it('more than 10 bytes or beyond 64 bits: BAD_VARINT', () => {
    throwsCodec(() => decodeUvarint(hex('ff ff ff ff ff ff ff ff ff 02'), 0), 'BAD_VARINT');
    throwsCodec(() => decodeUvarint(hex('80 80 80 80 80 80 80 80 80 80 01'), 0), 'BAD_VARINT');
  });

  it('refuses values it cannot encode', () => {
    throwsCodec(() => encodeUvarint(-1), 'INVALID_FIELD');
    throwsCodec(() => encodeUvarint(1n << 64n), 'INVALID_FIELD');
    throwsCodec(() => encodeUvarint(0.5), 'INVALID_FIELD');
  });
});

describe('lengthPrefixed / encodeFramedMessage', () => {
  it('spec §4 examples: PingRequest 02 3a 00, PingResponse 02 42 00, empty Message 00', () => {
    assert.equal(toHex(encodeFramedMessage({ kind: 'pingRequest' }, 'v0.34')), '023a00');
    assert.equal(toHex(encodeFramedMessage({ kind: 'pingResponse' }, 'v1.0')), '024200');
    assert.equal(toHex(encodeFramedMessage({ kind: 'empty' }, 'v0.38')), '00');
  });

  it('uses a two-byte prefix from 128 bytes on', () => {
    const framed = lengthPrefixed(new Uint8Array(200));
    assert.equal(framed.length, 202);
    assert.equal(toHex(framed.subarray(0, 2)), 'c801');
  });
});

describe('FrameDecoder', () => {
  const pingReq = hex('02 3a 00');
  const pingRes = hex('02 42 00');

  it('returns complete bodies in order from one chunk', () => {
    const d = new FrameDecoder();
    const bodies = d.push(Uint8Array.of(...pingReq, 0x00, ...pingRes));
    assert.deepStrictEqual(bodies, [hex('3a00'), new Uint8Array(0), hex('4200')]);
    assert.deepStrictEqual(decodeMessage(bodies[1] ?? assert.fail(), 'v0.38'), { kind: 'empty' });
    assert.equal(d.bufferedBytes, 0);
  });

  it('reassembles frames split at every byte', () => {
    const stream = Uint8Array.of(...pingReq, ...lengthPrefixed(new Uint8Array(300).fill(9)), ...pingRes);
    const d = new FrameDecoder();
    const bodies: Uint8Array[] = [];
    for (const byte of stream) bodies.push(...d.push(Uint8Array.of(byte)));
    assert.deepStrictEqual(bodies, [hex('3a00'), new Uint8Array(300).fill(9), hex('4200')]);
    assert.equal(d.bufferedBytes, 0);
  });

  it('keeps a partial frame buffered until it completes', () => {
    const d = new FrameDecoder();
    assert.deepStrictEqual(d.push(hex('05 01 02')), []);
    assert.equal(d.bufferedBytes, 3);
    assert.deepStrictEqual(d.push(hex('03 04 05 02')), [hex('0102030405')]);
    assert.equal(d.bufferedBytes, 1);
  });

  it('accepts exactly the maximum and refuses one byte more, before the body arrives', () => {
    const d = new FrameDecoder();
    assert.equal(d.push(lengthPrefixed(new Uint8Array(DEFAULT_MAX_MESSAGE_SIZE))).length, 1);
    // Only the prefix of an oversize frame: refused at once, nothing waits for the body.
    throwsCodec(() => d.push(encodeUvarint(DEFAULT_MAX_MESSAGE_SIZE + 1)), 'OVERSIZE');
  });

  it('honours a custom maximum', () => {
    const d = new FrameDecoder({ maxLength: 2 });
    assert.deepStrictEqual(d.push(pingReq), [hex('3a00')]);
    throwsCodec(() => d.push(hex('03 00 00 00')), 'OVERSIZE');
  });

  it('refuses huge and overlong length prefixes', () => {
    throwsCodec(() => new FrameDecoder().push(hex('ff ff ff ff ff ff ff ff ff 01')), 'OVERSIZE');
    throwsCodec(() => new FrameDecoder().push(hex('ff ff ff ff ff ff ff ff ff 7f')), 'BAD_VARINT');
    throwsCodec(() => new FrameDecoder().push(hex('80 80 80 80 80 80 80 80 80 80 80')), 'BAD_VARINT');
  });

  it('an overlong prefix split over chunks is refused once the 10th byte arrives', () => {
    const d = new FrameDecoder();
    for (let i = 0; i < 9; i++) assert.deepStrictEqual(d.push(hex('80')), []);
    throwsCodec(() => d.push(hex('80')), 'BAD_VARINT');
  });

  it('is unusable after a failure', () => {
    const d = new FrameDecoder({ maxLength: 4 });
    throwsCodec(() => d.push(hex('05')), 'OVERSIZE');
    throwsCodec(() => d.push(pingReq), 'OVERSIZE');
    assert.equal(d.bufferedBytes, 0);
  });

  it('returned bodies are copies: later pushes and caller mutation do not affect them', () => {
    const d = new FrameDecoder();
    const chunk = Buffer.from(hex('02 3a 00 02 42'));
    const [body] = d.push(chunk);
    chunk.fill(0);
    assert.deepStrictEqual(body, hex('3a00'));
    assert.deepStrictEqual(d.push(hex('00')), [hex('4200')]);
  });

  it('rejects a nonsensical maximum', () => {
    assert.throws(() => new FrameDecoder({ maxLength: -1 }), RangeError);
  });
});
