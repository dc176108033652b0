/**
 * The status page in a real headless Chromium (Debian's /usr/bin/chromium, driven by
 * playwright-core): served by a real admin server whose fake runtime changes between polls,
 * loaded with `#token=…`, it must render the live values (version, key addresses, refusal and
 * error counts, times in UTC) and keep them updated, compute a signing rate, fit a 390 px wide
 * phone without horizontal scrolling, and say so when the token is refused. Any script error or
 * CSP violation fails. Screenshots at desktop and phone width go to the test's temporary
 * directory, or to $COMETKMS_SCREENSHOT_DIR when set (kept, for a person to look at).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import type { AdminServer } from '../../../src/admin/server.ts';
import type { NodeStatus } from '../../../src/admin/types.ts';
import { VERSION } from '../../../src/version.ts';
import { FakeRuntime, sampleStatus, startTestAdminServer } from '../../unit/admin/fake-runtime.ts';

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
let shots: string;
let server: AdminServer;
let runtime: ChangingRuntime;
let context: BrowserContext;
let base: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cometkms-status-page-'));
  shots = process.env['COMETKMS_SCREENSHOT_DIR'] ?? join(dir, 'screenshots');
  await mkdir(shots, { recursive: true });
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

/** The text of the cell `field` in the row of chain `chain`. */
const cell = (page: Page, chain: string, field: string): Promise<string | null> =>
  page.locator(`tr[data-chain="${chain}"] [data-field="${field}"]`).textContent({ timeout: 10_000 });

/** The cell texts of the table row(s) matching `row`. */
const cells = (page: Page, row: string): Promise<string[]> => page.locator(`${row} > td`).allTextContents();

/** Width and height of a PNG file (from its IHDR chunk). */
async function pngSize(path: string): Promise<{ width: number; height: number }> {
  const png = await readFile(path);
  assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG', `${path} is a PNG`);
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

/** The page's document width against its viewport width (no DOM types in this project). */
function widths(page: Page): Promise<{ scroll: number; client: number }> {
  return page.evaluate(() => {
    const root = (
      globalThis as unknown as { document: { documentElement: { scrollWidth: number; clientWidth: number } } }
    ).document.documentElement;
    return { scroll: root.scrollWidth, client: root.clientWidth };
  });
}

/** A status with the longest values the page must still fit on a phone. */
function longStatus(): NodeStatus {
  const s = sampleStatus();
  s.node_id = 'cometkms-2.cometkms.cometkms.svc.cluster.local';
  s.hsm.reachable = false;
  s.hsm.last_error =
    'C_Sign failed: CKR_DEVICE_ERROR (0x30) from /usr/safenet/lunaclient/lib/libCryptoki2_64.so slot 3';
  s.cluster!.etcd_endpoints = [0, 1, 2].map((i) => `https://etcd-${i}.etcd.cometkms.svc.cluster.local:2379`);
  s.cluster!.members = [0, 1, 2].map((i) => ({
    node_id: `cometkms-${i}`,
    forward_addr: `cometkms-${i}.cometkms.cometkms.svc.cluster.local:26790`,
    leader: i === 2,
  }));
  const a = s.chains[0]!;
  a.chain_id = 'a-chain-id-of-the-longest-length-allowed-50-chars';
  a.height = 123_456_789_012;
  a.validators.push({
    addr: 'unix:///run/cometbft/validators/a-rather-long-directory-name/privval.sock',
    connected: false,
    connects: 12345,
  });
  return s;
}

describe('status page', () => {
  test('renders the live status and follows changes', async () => {
    const { page, errors } = await openPage(`#token=${TOKEN}`);
    try {
      await page.locator('#node', { hasText: /^kms-1$/ }).waitFor({ timeout: 10_000 });
      // The token left the address bar.
      assert.equal(new URL(page.url()).hash, '');
      assert.equal(await field(page, 'overview', 'version'), VERSION);
      assert.equal(await field(page, 'overview', 'leader'), 'kms-1');
      assert.match(
        (await field(page, 'overview', 'uptime')) ?? '',
        /^0m 12s \(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$/,
      );
      assert.match(
        (await page.locator('#updated').textContent()) ?? '',
        /^updated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/,
      );
      assert.equal(await field(page, 'overview', 'role'), 'leader');
      assert.equal(await field(page, 'overview', 'term'), '42');
      assert.equal(await field(page, 'hsm', 'reachable'), 'yes');
      assert.equal(await field(page, 'cluster', 'etcd'), 'healthy');
      assert.deepEqual(await cells(page, '#members tr:nth-child(2)'), ['kms-2', '127.0.0.1:26791', '']);
      assert.equal(await cell(page, 'chain-b', 'chain'), 'chain-b');
      assert.equal(await cell(page, 'chain-b', 'key'), 'secp256k1 / v1.0');
      assert.equal(await cell(page, 'chain-b', 'address'), 'B7E2C94A10F35D68E0C1A2B3D4E5F60718293A4B');
      assert.equal(await cell(page, 'chain-b', 'hrs'), '7/1/2');
      assert.equal(await cell(page, 'chain-b', 'last-signed'), 'never');
      assert.equal(await cell(page, 'chain-b', 'refused'), '0');
      assert.equal(await cell(page, 'chain-b', 'errors'), '0');
      assert.match((await cell(page, 'chain-b', 'validators')) ?? '', /^1\/1 up/);
      assert.equal(await cell(page, 'chain-a', 'address'), '3A9F51C0D2B8E47761F0AB92C5D3E8F10A2B3C4D');
      assert.match(
        (await cell(page, 'chain-a', 'last-signed')) ?? '',
        /^2025-01-01 00:00:00 UTC \(\d+d ago\)$/,
      );
      assert.equal(await cell(page, 'chain-a', 'refused'), '3 (1 double-sign)');
      assert.equal(await cell(page, 'chain-a', 'errors'), '2');
      assert.match((await cell(page, 'chain-a', 'validators')) ?? '', /^1\/2 up/);

      // chain-a's height grows with every poll: the page shows it moving, and a rate.
      const first = Number((await cell(page, 'chain-a', 'hrs'))?.split('/')[0]);
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

  test('fits a desktop and a 390 px phone screen; screenshots of both', async () => {
    runtime.current = longStatus();
    const { page, errors } = await openPage(`#token=${TOKEN}`);
    try {
      const chain = runtime.current.chains[0]!.chain_id;
      for (const [name, width, height] of [
        ['desktop', 1280, 800],
        ['phone', 390, 844],
      ] as const) {
        await page.setViewportSize({ width, height });
        await page.locator(`tr[data-chain="${chain}"]`).waitFor({ timeout: 10_000 });
        await page.locator('#hsm dd', { hasText: 'CKR_DEVICE_ERROR' }).waitFor({ timeout: 10_000 });
        const w = await widths(page);
        assert.ok(
          w.scroll <= w.client,
          `${name}: the page is ${w.scroll} px wide in a ${w.client} px viewport`,
        );
        const file = join(shots, `status-page-${name}.png`);
        await page.screenshot({ path: file, fullPage: true });
        // A full-page screenshot is as wide as the document: exactly the viewport, nothing sticks out.
        assert.equal((await pngSize(file)).width, width, `${name} screenshot width`);
      }
      // On the phone every chain cell names itself (the table header is hidden there).
      const labels = await page
        .locator(`tr[data-chain="${chain}"] > td[data-label]`)
        .evaluateAll((tds) =>
          tds.map((td) => (td as unknown as { dataset: { label: string } }).dataset.label),
        );
      assert.deepEqual(labels, ['h/r/s', 'last signed', 'rate', 'refused', 'errors', 'validators']);
      assert.equal(await field(page, 'overview', 'version'), VERSION);
      assert.deepEqual(errors, []);
    } finally {
      runtime.current = sampleStatus();
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
