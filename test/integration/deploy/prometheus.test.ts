/**
 * deploy/prometheus/alerts.yml: `promtool check rules` accepts it, `promtool test rules` passes
 * the cases in alerts.promtest.yml, every alert has a case where it fires and one where it must
 * not, and README's Monitoring section lists every alert. (Whether the metrics the rules use are
 * exported by a real node is checked in test/integration/admin/metrics.test.ts.)
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';

const REPO = join(import.meta.dirname, '../../..');
const RULES = join(REPO, 'deploy/prometheus/alerts.yml');
const CASES = join(import.meta.dirname, 'alerts.promtest.yml');

interface Run {
  code: number;
  out: string;
}

function promtool(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile('promtool', args, { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        resolve({
          code: -1,
          out: 'promtool is not installed: run scripts/install-deps.sh (Debian package prometheus)',
        });
        return;
      }
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

interface RuleFile {
  groups: Array<{ name: string; rules: Array<{ alert?: string; expr: string }> }>;
}

interface CaseFile {
  rule_files: string[];
  tests: Array<{
    name: string;
    alert_rule_test?: Array<{ alertname: string; exp_alerts?: unknown[] }>;
  }>;
}

async function alertNames(): Promise<string[]> {
  const rules = parse(await readFile(RULES, 'utf8')) as RuleFile;
  return rules.groups.flatMap((g) => g.rules.flatMap((r) => (r.alert === undefined ? [] : [r.alert])));
}

describe('deploy/prometheus/alerts.yml', () => {
  test('promtool check rules accepts every rule', async () => {
    const r = await promtool('check', 'rules', RULES);
    assert.equal(r.code, 0, r.out);
    const names = await alertNames();
    assert.match(r.out, new RegExp(`SUCCESS: ${names.length} rules found`));
  });

  test('promtool test rules passes every case', async () => {
    const r = await promtool('test', 'rules', CASES);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS/);
    assert.doesNotMatch(r.out, /FAILED/);
  });

  test('every alert has a case where it fires and one where it must stay silent', async () => {
    const cases = parse(await readFile(CASES, 'utf8')) as CaseFile;
    assert.deepEqual(cases.rule_files, ['../../../deploy/prometheus/alerts.yml']);
    const checks = cases.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const name of await alertNames()) {
      const mine = checks.filter((c) => c.alertname === name);
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${name}: no case where it fires`,
      );
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${name}: no case where it stays silent`,
      );
    }
  });

  test('README names every alert (Monitoring)', async () => {
    const readme = await readFile(join(REPO, 'README.md'), 'utf8');
    const monitoring = readme.slice(readme.indexOf('## Monitoring'));
    for (const name of await alertNames()) assert.ok(monitoring.includes(`\`${name}\``), `README: ${name}`);
  });
});
