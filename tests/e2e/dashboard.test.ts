// The admin console in a real headless Chromium (Debian `chromium`, driven by playwright-core) against a
// real gateway: a study sent with storescu appears live, is searched, opened, reprocessed; a queue is
// paused and resumed by clicks; bull-board loads. Screenshots are written to a temp dir for a human look.
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { studyUidOf } from '../helpers/dicom-tools.ts';
import { makeModelsDir, SHARED, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';

const FUJI_CHEST = path.join(SHARED, 'dicom-samples/xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let gateway: GatewayProcess;
let browser: Browser;
let page: Page;
let shots: string;
let base: string;

before(async () => {
  shots = await mkdtemp(path.join(tmpdir(), 'aigw-dashboard-'));
  gateway = await startGateway({ modelsDir: await makeModelsDir(['uniformity']) });
  base = `http://127.0.0.1:${gateway.httpPort}`;
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
});

after(async () => {
  await browser?.close();
  await gateway?.dispose();
});

test('a study appears live, is searched, opened, reprocessed; a queue is paused and resumed', async () => {
  const studyUid = studyUidOf(FUJI_CHEST);
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));

  // The page is open before the study arrives: it must show up without a reload (live updates).
  await page.goto(`${base}/#/studies`);
  await page.waitForSelector('#whoami:has-text("local (admin)")');
  const sent = await gateway.store([FUJI_CHEST]);
  assert.equal(sent.code, 0, sent.stderr);
  const row = page.locator(`tr[data-study="${studyUid}"]`);
  await row.locator('.badge.done').waitFor({ timeout: 60_000 });
  const rowText = await row.innerText();
  assert.match(rowText, /MODALITY1/);
  assert.match(rowText, /image-uniformity@[\d.]+ \(cpu\)/);
  assert.match(rowText, /infer \d/, 'a timing for the inference stage');
  await page.screenshot({ path: path.join(shots, 'studies.png'), fullPage: true });

  // Search and filter.
  await page.fill('#search', 'NO-SUCH-AE');
  await row.waitFor({ state: 'detached' });
  await page.fill('#search', 'modality1');
  await row.waitFor();
  await page.selectOption('#state-filter', 'failed');
  await row.waitFor({ state: 'detached' });
  await page.selectOption('#state-filter', 'done');
  await row.waitFor();

  // One study's timeline, then reprocess it: a new run.
  await row.locator(`a[href="#/study/${studyUid}"]`).click();
  const timeline = page.locator('#timeline');
  for (const type of ['received', 'routed', 'inferred', 'delivered'])
    await timeline.locator(`li[data-type="${type}"]`).first().waitFor();
  assert.match(await timeline.locator('li[data-type="received"]').innerText(), /1 instance\(s\).*MODALITY1/);
  await page.click('#study button[data-action="reprocess"]');
  await page.waitForSelector('#toast:has-text("reprocess: done")');
  await waitFor('the second run', async () => {
    const s = await gateway.api<{ run: number; state: string }>(`/api/studies/${studyUid}`);
    return s.run === 2 && s.state === 'done' ? s : undefined;
  });
  await timeline.locator('li[data-type="inferred"]').nth(1).waitFor();
  await page.screenshot({ path: path.join(shots, 'study.png'), fullPage: true });

  // Pause and resume the model's inference queue (one queue per model version) by clicks.
  const modelQueue = 'inference.image-uniformity@1.0.0';
  await page.click('nav a[data-page="queues"]');
  const inferenceRow = page.locator(`#queues tr[data-queue="${modelQueue}"]`);
  await inferenceRow.locator('button[data-action="pause"]').click();
  await inferenceRow.locator('.badge.paused').waitFor();
  const listed = await gateway.api<{ name: string; paused: boolean }[]>('/api/queues');
  assert.equal(listed.find((q) => q.name === modelQueue)!.paused, true);
  await inferenceRow.locator('button[data-action="resume"]').click();
  await inferenceRow.locator('.badge.active').waitFor();

  // Workers page shows the in-process worker's heartbeat.
  await page.click('nav a[data-page="workers"]');
  await page.waitForSelector('#workers td:has-text("image-uniformity: cpu")');
  await page.screenshot({ path: path.join(shots, 'workers.png'), fullPage: true });

  // bull-board is served at /admin/queues.
  await page.goto(`${base}/admin/queues`);
  await page.waitForSelector('text=inference.image-uniformity@1.0.0', { timeout: 30_000 });

  const actions =
    await gateway.api<{ actor: string; action: string; result: string }[]>('/api/audit?type=action');
  assert.deepEqual(
    // Views of identifying data are audited too (tests/e2e/console.test.ts checks those).
    actions.filter((a) => a.action !== 'view-phi').map((a) => `${a.actor} ${a.action} ${a.result}`),
    ['local reprocess ok', 'local pause-queue ok', 'local resume-queue ok'],
  );
  assert.deepEqual(pageErrors, []);
  console.log(`dashboard screenshots in ${shots}`);
});
