// The Trends page in a real headless Chromium (Debian `chromium`, playwright-core) against a real gateway
// with the blank-image model: after a few studies are sent (blank images the model flags, a noisy one it
// does not), the charts, drawn by uPlot served from node_modules (no CDN), show what the API says: studies
// and instances per minute, receive → report latency per priority and per model, queue depths, the
// positive-finding rate per model; the series lines are really painted on the canvases; switching to the
// last day, hiding a series from the legend and hovering work. Screenshots go to a temp dir.
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type Browser, type Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.ts';
import { makeModelsDir, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { writeSynthetic } from '../helpers/synthetic-dicom.ts';

const USER = { username: 'lead', password: 'lead-password-1' };
const MODEL = 'image-uniformity';

let gateway: GatewayProcess;
let browser: Browser;
let shots: string;
let base: string;

async function api<T>(p: string): Promise<T> {
  const res = await fetch(`${base}${p}`, {
    headers: {
      authorization: `Basic ${Buffer.from(`${USER.username}:${USER.password}`).toString('base64')}`,
    },
  });
  if (!res.ok) throw new Error(`GET ${p}: ${res.status}`);
  return (await res.json()) as T;
}

interface Trends {
  range: string;
  t: number[];
  instancesPerMinute: number[];
  studiesPerMinute: number[];
  latency: { lanes: { lane: string; p95: (number | null)[] }[]; models: { model: string }[] };
  queues: { queue: string; jobs: (number | null)[] }[];
  failuresByStage: unknown[];
  positiveRate: { model: string; reports: number[]; rate: (number | null)[] }[];
}

before(async () => {
  shots = await mkdtemp(path.join(tmpdir(), 'aigw-trends-'));
  gateway = await startGateway({
    modelsDir: await makeModelsDir(['uniformity']),
    config: {
      http: { auth: { basic: [{ user: USER.username, password: USER.password, role: 'admin' }] } },
    },
  });
  base = `http://127.0.0.1:${gateway.httpPort}`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await gateway?.dispose();
});

/**
 * Pixels of the chart's canvas in a saturated colour: its series (the palette's blues, reds, greens...),
 * not the grey grid, the black axes or the white background.
 */
async function seriesPixels(page: Page, chart: string): Promise<number> {
  return page.evaluate((id) => {
    const canvas = document.querySelector<HTMLCanvasElement>(`#chart-${id} canvas`);
    if (!canvas) return -1;
    const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i]!, data[i + 1]!, data[i + 2]!, data[i + 3]!];
      if (a > 128 && Math.max(r, g, b) - Math.min(r, g, b) > 80) n++;
    }
    return n;
  }, chart);
}

/** The chart's series pixels once uPlot has painted (it draws on the next frame). */
async function painted(page: Page, chart: string, atLeast = 10): Promise<number> {
  let n = 0;
  for (let i = 0; i < 30 && n < atLeast; i++) {
    n = await seriesPixels(page, chart);
    if (n < atLeast) await page.waitForTimeout(100);
  }
  return n;
}

test('the Trends page charts what the gateway did, over the hour and the day', async () => {
  // Three studies from two modalities: two blank images (flagged), one noisy (not flagged).
  const studies: { uid: string; pixels: Uint16Array; aet: string }[] = [];
  for (let i = 0; i < 3; i++) {
    const pixels = new Uint16Array(128 * 128);
    if (i < 2) pixels.fill(1000);
    else for (let p = 0; p < pixels.length; p++) pixels[p] = (p * 2654435761) % 4096;
    studies.push({
      uid: `2.25.${process.pid}${Date.now()}${i}`,
      pixels,
      aet: i === 0 ? 'CT_ROOM' : 'XR_ROOM',
    });
  }
  for (const s of studies) {
    const file = path.join(shots, `${s.uid}.dcm`);
    await writeSynthetic(
      file,
      {
        StudyInstanceUID: s.uid,
        SeriesInstanceUID: `${s.uid}.1`,
        SOPInstanceUID: `${s.uid}.1.1`,
        Modality: 'OT',
        Rows: 128,
        Columns: 128,
        BitsStored: 12,
        HighBit: 11,
        PixelRepresentation: 0,
        WindowCenter: 2048,
        WindowWidth: 4096,
      },
      s.pixels,
    );
    const sent = await gateway.store([file], { aet: s.aet });
    assert.equal(sent.code, 0, sent.stderr);
  }

  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    httpCredentials: USER,
  });
  const page = await context.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  await page.goto(`${base}/#/studies`);
  for (const s of studies)
    await page.locator(`tr[data-study="${s.uid}"] .badge.done`).waitFor({ timeout: 120_000 });
  const listed = await api<{
    rows: { studyUid: string; findings: { model: string; positive: boolean }[] }[];
  }>('/api/worklist?limit=50');
  const positives = studies.filter((s) =>
    listed.rows.find((r) => r.studyUid === s.uid)!.findings.some((f) => f.model === MODEL && f.positive),
  ).length;
  assert.ok(positives >= 2, `the blank images are flagged (${positives})`);

  // What the API says; the turnaround minute is written once the SR is delivered (done), ingest counts
  // are flushed every 5 s.
  const t = await waitFor(
    'the studies in the trends',
    async () => {
      const r = await api<Trends>('/api/trends?range=hour');
      const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
      return sum(r.instancesPerMinute) >= 3 && r.latency.lanes.length > 0 ? r : undefined;
    },
    20_000,
  );
  const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
  assert.equal(t.t.length, 60);
  assert.equal(sum(t.instancesPerMinute), 3);
  assert.equal(sum(t.studiesPerMinute), 3);
  const rate = t.positiveRate.find((r) => r.model === MODEL)!;
  assert.equal(sum(rate.reports), 3);
  assert.equal(
    Math.round(rate.rate.reduce<number>((n, r, i) => n + (r ?? 0) * rate.reports[i]!, 0)),
    positives,
    'positive rate × reports = the studies the list calls positive',
  );
  assert.deepEqual(
    t.latency.models.map((m) => m.model),
    [MODEL],
  );
  assert.ok(t.queues.length >= 3, 'the queues are sampled');

  // The page: every chart with data has a canvas and its line painted.
  await page.click('nav a[data-page="trends"]');
  await page.waitForFunction(() => document.getElementById('page')?.dataset.trendsRange === 'hour');
  const chart = (id: string) => page.locator(`#chart-${id}`);
  for (const id of ['ingest', 'latency-priority', 'latency-model', 'positive-rate']) {
    await chart(id).locator('canvas').waitFor();
    assert.ok(Number(await chart(id).getAttribute('data-points')) > 0, `${id} has points`);
    const drawn = await painted(page, id);
    assert.ok(drawn >= 10, `${id}: its series are painted (${drawn} px)`);
  }
  assert.equal(await chart('ingest').getAttribute('data-series'), '2');
  assert.equal(Number(await chart('queues').getAttribute('data-series')), t.queues.length);
  await chart('queues').locator('canvas').waitFor();
  // No job failed: the failure charts say so rather than draw nothing.
  assert.deepEqual(t.failuresByStage, []);
  assert.match(await chart('failures-stage').innerText(), /No data in this range yet/);
  // The legend names the series; the positive rate's is the model.
  assert.match(await chart('positive-rate').locator('.u-legend').innerText(), new RegExp(MODEL));
  await page.screenshot({ path: path.join(shots, 'trends-hour.png'), fullPage: true });

  // Hover: the legend shows the values under the cursor. The three instances fall in the last minutes'
  // points (in one or two of them, if a minute turned meanwhile): the values shown over the last five points
  // add up to 3.
  const box = (await chart('ingest').locator('.u-over').boundingBox())!;
  const step = box.width / (t.t.length - 1);
  let shown = 0;
  for (let k = 0; k < 5; k++) {
    await page.mouse.move(box.x + box.width - 1 - k * step, box.y + box.height / 2);
    await page.waitForTimeout(100);
    const value = await page.evaluate(
      () =>
        document.querySelectorAll('#chart-ingest .u-legend .u-series')[1]?.querySelector('.u-value')
          ?.textContent ?? '',
    );
    shown += Number(value) || 0;
  }
  assert.equal(shown, 3, 'the legend shows the instances per minute under the cursor');
  // Click the legend entries: both series hidden (uPlot marks them off), nothing painted; shown again.
  const before = await seriesPixels(page, 'ingest');
  const entries = chart('ingest').locator('.u-legend .u-series');
  await entries.nth(1).click();
  await entries.nth(2).click();
  await page.waitForFunction(
    () => document.querySelectorAll('#chart-ingest .u-legend .u-series.u-off').length === 2,
  );
  await page.waitForTimeout(200);
  const hidden = await seriesPixels(page, 'ingest');
  assert.ok(hidden < before / 10, `hidden series are not painted (${hidden} of ${before} px)`);
  await entries.nth(1).click();
  await entries.nth(2).click();
  assert.ok((await painted(page, 'ingest', before / 2)) >= before / 2, 'shown again');

  // The last day: 10-minute points, the same studies.
  await page.click('button[data-range="day"]');
  await page.waitForFunction(() => document.getElementById('page')?.dataset.trendsRange === 'day');
  const day = await api<Trends>('/api/trends?range=day');
  assert.equal(day.t.length, 144);
  assert.equal(Math.round(sum(day.instancesPerMinute) * 10), 3);
  for (const id of ['ingest', 'latency-model', 'positive-rate']) {
    await chart(id).locator('canvas').waitFor();
    assert.ok(Number(await chart(id).getAttribute('data-points')) > 0, `${id} has points over the day`);
    assert.ok((await painted(page, id)) >= 10, `${id}: painted over the day`);
  }
  await page.screenshot({ path: path.join(shots, 'trends-day.png'), fullPage: true });
  // No horizontal scroll at this size.
  assert.equal(
    await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth),
    0,
  );
  // uPlot came from this gateway (node_modules), not a CDN.
  const vendor = await fetch(`${base}/vendor/uPlot.iife.min.js`, {
    headers: {
      authorization: `Basic ${Buffer.from(`${USER.username}:${USER.password}`).toString('base64')}`,
    },
  });
  assert.equal(vendor.status, 200);
  assert.match(await vendor.text(), /uPlot/);
  // A bad range is refused.
  await assert.rejects(api('/api/trends?range=week'), /400/);
  assert.deepEqual(pageErrors, []);
  await context.close();
});
