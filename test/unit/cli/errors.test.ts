import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CommanderError, InvalidArgumentError } from 'commander';
import { EXIT_CODES, exitCodeOf, ReportedError, UsageError } from '../../../src/cli/errors.ts';
import { ConfigError } from '../../../src/config/load.ts';
import { HsmError, Pkcs11Error } from '../../../src/pkcs11/errors.ts';

test('each error class has its exit code', () => {
  assert.deepEqual(EXIT_CODES, { ok: 0, failure: 1, usage: 2, config: 3, hsm: 4 });
  assert.equal(exitCodeOf(new UsageError('x')), 2);
  assert.equal(exitCodeOf(new InvalidArgumentError('bad value')), 2);
  assert.equal(exitCodeOf(new CommanderError(1, 'commander.unknownOption', 'x')), 2);
  assert.equal(exitCodeOf(new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)')), 0);
  assert.equal(exitCodeOf(new ConfigError('x')), 3);
  assert.equal(exitCodeOf(new HsmError('x')), 4);
  assert.equal(exitCodeOf(new Pkcs11Error('CKR_PIN_INCORRECT', 0xa0, 'C_Login')), 4);
  assert.equal(exitCodeOf(new ReportedError(3)), 3);
  assert.equal(exitCodeOf(new Error('x')), 1);
  assert.equal(exitCodeOf('not an error'), 1);
});

test('the class is found along the cause chain', () => {
  const wrapped = new Error('cannot start', {
    cause: new Error('step failed', { cause: new HsmError('no token') }),
  });
  assert.equal(exitCodeOf(wrapped), 4);
  assert.equal(exitCodeOf(new Error('outer', { cause: new ConfigError('inner') })), 3);
  // the first classified error wins
  assert.equal(exitCodeOf(new UsageError('outer', { cause: new HsmError('inner') })), 2);
});

test('a cause cycle does not loop', () => {
  const a = new Error('a');
  const b = new Error('b', { cause: a });
  (a as { cause?: unknown }).cause = b;
  assert.equal(exitCodeOf(a), 1);
});
