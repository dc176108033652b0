import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { MerlinTranscript } from '../../../src/privval/merlin.ts';

interface MerlinVector {
  name: string;
  expected_hex: string;
}
const vectors = (
  JSON.parse(readFileSync(new URL('../../vectors/upstream/merlin.json', import.meta.url), 'utf8')) as {
    vectors: MerlinVector[];
  }
).vectors;
const utf8 = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function expected(name: string): string {
  const v = vectors.find((x) => x.name === name);
  assert.ok(v, `vector ${name} present`);
  return v.expected_hex;
}

describe('MerlinTranscript', () => {
  it('matches the "simple" upstream vector', () => {
    const t = new MerlinTranscript('test protocol');
    t.appendMessage('some label', utf8('some data'));
    assert.equal(hex(t.challengeBytes('challenge', 32)), expected('simple'));
  });

  it('matches the "complex" upstream vector (crosses many STROBE blocks)', () => {
    const t = new MerlinTranscript('test protocol');
    t.appendMessage('step1', utf8('some data'));
    const big = new Uint8Array(1024).fill(99);
    let chl: Uint8Array = new Uint8Array(0);
    for (let i = 0; i < 32; i++) {
      chl = t.challengeBytes('challenge', 32);
      t.appendMessage('bigdata', big);
      t.appendMessage('challengedata', chl);
    }
    assert.equal(hex(chl), expected('complex'));
  });

  it('binds the challenge to every message and label', () => {
    const base = () => new MerlinTranscript('test protocol');
    const a = base();
    a.appendMessage('some label', utf8('some data'));
    const b = base();
    b.appendMessage('some label', utf8('some datb'));
    const c = base();
    c.appendMessage('other label', utf8('some data'));
    const ca = hex(a.challengeBytes('challenge', 32));
    assert.notEqual(ca, hex(b.challengeBytes('challenge', 32)));
    assert.notEqual(ca, hex(c.challengeBytes('challenge', 32)));
  });

  it('produces successive, different challenges of the requested length', () => {
    const t = new MerlinTranscript('x');
    const first = t.challengeBytes('c', 200);
    const second = t.challengeBytes('c', 200);
    assert.equal(first.length, 200);
    assert.notEqual(hex(first), hex(second));
  });

  it('rejects a challenge length that does not fit in a u32', () => {
    const t = new MerlinTranscript('x');
    assert.throws(() => t.challengeBytes('c', -1), RangeError);
  });
});
