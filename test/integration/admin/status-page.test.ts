/**
 * The status page in a real headless Chromium (Debian's /usr/bin/chromium, driven by
 * playwright-core): served by a real admin server whose fake runtime changes between polls,
 * loaded with `#token=…`, it must render the live values and keep them updated, compute a
 * signing rate, and say so when the token is refused. Any script error or CSP violation fails.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import type { AdminServer } from '../../../src/admin/server.ts';
import type { NodeStatus } from '../../../src/admin/types.ts';
import { FakeRuntime, startTestAdminServer } from '../../unit/admin/fake-runtime.ts';

const CHROMIUM = '/usr/bin/chromium';
const TOKEN = 'page-test-token';

/** A runtime whose chain-a height grows by one on every /status poll. */
class ChangingRuntime extends FakeRuntime {
  polls = 0;
  override status(): NodeStatus {
    this.polls++;
    const s = structuredClone(this.current);
    const a = s.chains[0];
    if (a !== undefined) a.height += this.polls;
    return s;
  }
}

let dir: string;
let server: AdminServer;
let runtime: ChangingRuntime;
let context: BrowserContext;
let base: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-status-page-'));
  runtime = new ChangingRuntime();
  server = await startTestAdminServer(runtime, TOKEN);
  base = `http://${server.address}`;
  context = await chromium.launchPersistentContext(join(dir, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30_000,
  });
});
after(async () => {
  await context?.close();
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A new tab that fails the test on any page error or console error (CSP violations included). */
async function openPage(fragment: string): Promise<{ page: Page; errors: string[] }> {
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  // No prompt may be needed when the token is in the fragment: a dialog is a failure.
  page.on('dialog', (d) => {
    errors.push(`unexpected dialog: ${d.message()}`);
    void d.dismiss();
  });
  await page.goto(`${base}/${fragment}`);
  return { page, errors };
}

/** The value shown next to `name` in the definition list `#list`. */
const field = (page: Page, list: string, name: string): Promise<string | null> =>
  page.locator(`#${list} dt:text-is("${name}") + dd`).textContent({ timeout: 10_000 });

/** The cell texts of the table row(s) matching `row`. */
const cells = (page: Page, row: string): Promise<string[]> => page.locator(`${row} > td`).allTextContents();

describe('status page', () => {
  test('renders the live status and follows changes', async () => {
    const { page, errors } = await openPage(`#token=${TOKEN}`);
    try {
      await page.locator('#node', { hasText: /^kms-1$/ }).waitFor({ timeout: 10_000 });
      // The token left the address bar.
      assert.equal(new URL(page.url()).hash, '');
      assert.equal(await field(page, 'overview', 'leader'), 'kms-1');
      assert.equal(await field(page, 'overview', 'role'), 'leader');
      assert.equal(await field(page, 'overview', 'term'), '42');
      assert.equal(await field(page, 'hsm', 'reachable'), 'yes');
      assert.equal(await field(page, 'cluster', 'etcd'), 'healthy');
      assert.deepEqual(await cells(page, '#members tr:nth-child(2)'), ['kms-2', '127.0.0.1:26791', '']);
      const chainB = await cells(page, 'tr[data-chain="chain-b"]');
      assert.deepEqual(chainB.slice(0, 4), ['chain-b', 'secp256k1 / v1.0', '7/1/2', 'never']);
      assert.match(chainB[5] ?? '', /^1\/1 up/);
      assert.match((await cells(page, 'tr[data-chain="chain-a"]'))[5] ?? '', /^1\/2 up/);

      // chain-a's height grows with every poll: the page shows it moving, and a rate.
      const first = Number((await cells(page, 'tr[data-chain="chain-a"]'))[2]?.split('/')[0]);
      assert.ok(first > 100, `height ${first}`);
      // Heights only grow, so "not starting with the first height" means "higher".
      await page
        .locator('tr[data-chain="chain-a"] td.hrs', { hasNotText: new RegExp(`^${first}/`) })
        .waitFor({ timeout: 10_000 });
      await page
        .locator('tr[data-chain="chain-a"] td', { hasText: /^[1-9][0-9]*\.[0-9] h\/min$/ })
        .waitFor({ timeout: 10_000 });

      // A leadership change shows up on the next poll.
      runtime.current = { ...runtime.current, role: 'follower', leader_id: 'kms-2', term: 43 };
      await page.locator('#overview dd', { hasText: /^kms-2$/ }).waitFor({ timeout: 10_000 });
      assert.equal(await field(page, 'overview', 'role'), 'follower');
      assert.equal(await field(page, 'overview', 'term'), '43');
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
  });

  test('a wrong token is reported on the page and forgotten', async () => {
    const { page, errors } = await openPage('#token=wrong');
    try {
      await page.locator('#banner', { hasText: 'The admin token was refused.' }).waitFor({ timeout: 10_000 });
      assert.equal(await page.locator('#banner button').textContent(), 'enter token');
      // (The page's CSP forbids string evaluation, and this project compiles without DOM types.)
      const stored = await page.evaluate(
        (key) =>
          (
            globalThis as unknown as { sessionStorage: { getItem(k: string): string | null } }
          ).sessionStorage.getItem(key),
        'cometkms-admin-token',
      );
      assert.equal(stored, null);
      // The 401 itself is logged by Chromium as a failed resource load; nothing else may fail.
      assert.deepEqual(
        errors.filter((e) => !/401 \(Unauthorized\)/.test(e)),
        [],
      );
    } finally {
      await page.close();
    }
  });
});
