import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatPrivvalAddress, parsePrivvalAddress } from '../../../src/privval/address.ts';

describe('parsePrivvalAddress', () => {
  it('parses tcp addresses with and without the scheme', () => {
    assert.deepEqual(parsePrivvalAddress('tcp://10.0.0.5:26659'), {
      proto: 'tcp',
      host: '10.0.0.5',
      port: 26659,
    });
    assert.deepEqual(parsePrivvalAddress('127.0.0.1:0'), { proto: 'tcp', host: '127.0.0.1', port: 0 });
    assert.deepEqual(parsePrivvalAddress('tcp://validator.internal:1'), {
      proto: 'tcp',
      host: 'validator.internal',
      port: 1,
    });
    assert.deepEqual(parsePrivvalAddress('tcp://[::1]:26659'), { proto: 'tcp', host: '::1', port: 26659 });
  });

  it('parses unix addresses', () => {
    assert.deepEqual(parsePrivvalAddress('unix:///run/cometbft/privval.sock'), {
      proto: 'unix',
      path: '/run/cometbft/privval.sock',
    });
  });

  it('rejects other protocols and malformed addresses', () => {
    for (const bad of [
      'udp://1.2.3.4:5',
      'noise://peer@1.2.3.4:5',
      'unix://',
      'tcp://1.2.3.4',
      'tcp://:26659',
      'tcp://1.2.3.4:65536',
      'tcp://1.2.3.4:port',
      'tcp://::1:26659',
      'tcp://[::1]26659',
      '',
    ]) {
      assert.throws(() => parsePrivvalAddress(bad), Error, bad);
    }
  });

  it('formats addresses back to their canonical form', () => {
    for (const a of ['tcp://127.0.0.1:26659', 'tcp://[::1]:1', 'unix:///tmp/x.sock']) {
      assert.equal(formatPrivvalAddress(parsePrivvalAddress(a)), a);
    }
    assert.equal(formatPrivvalAddress(parsePrivvalAddress('host:5')), 'tcp://host:5');
  });
});
