// The console's segmentation overlay in a real headless Chromium (Debian `chromium`, playwright-core)
// against a real gateway running the brain model (../shared/models/meshnet-brain-gwm) on the real
// 35-slice sagittal T1 series from ../shared: the study page shows the mask of the SEG the gateway wrote,
// blended over the slice with the largest mask area, captioned "slice N of 35, largest area" with each
// tissue's colour; the PNG fetched through the API holds pixels of each segment's colour; a role without
// the PHI permission is refused the overlay. Screenshots at 1280×800 and 1920×1080 go to a temp dir.
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type Browser } from 'playwright-core';
import { rgbPngPixels } from '../helpers/png.ts';
import { mrSlices, studyUidOf } from '../helpers/dicom-tools.ts';
import { basicAuth, horizontalOverflow, launchChromium, SIZES } from '../helpers/browser.ts';
import { makeModelsDir, startGateway, type GatewayProcess } from '../helpers/gateway.ts';

const BRAIN = 'meshnet-brain-gwm';
const USERS = {
  admin: { username: 'lead', password: 'lead-password-1' },
  viewer: { username: 'itadmin', password: 'itadmin-password-1' },
};
const SERIES = mrSlices(0, 35);
const STUDY = studyUidOf(SERIES[0]!);

let gateway: GatewayProcess;
let browser: Browser;
let shots: string;
let base: string;

const get = (p: string, u = USERS.admin) =>
  fetch(`${base}${p}`, { headers: { authorization: basicAuth(u) } });

interface OverlayFacts {
  slice: number;
  slices: number;
  area: number;
  segments: { number: number; label: string; colour: [number, number, number]; area: number }[];
}

/**
 * Pixels that lean towards `colour` the way an alpha blend over grey does: each channel difference has
 * the colour's sign and at least a third of its size (grey MR pixels have none).
 */
function countColoured(rgb: Uint8Array, colour: [number, number, number]): number {
  const [cr, cg, cb] = colour;
  const pairs: [number, number, number][] = [
    [0, 1, cr - cg],
    [0, 2, cr - cb],
    [1, 2, cg - cb],
  ];
  let n = 0;
  for (let p = 0; p < rgb.length; p += 3) {
    const ok = pairs.every(([a, b, d]) => {
      const diff = rgb[p + a]! - rgb[p + b]!;
      return Math.abs(d) < 30 || (Math.sign(diff) === Math.sign(d) && Math.abs(diff) >= Math.abs(d) / 3);
    });
    if (ok && !(rgb[p] === rgb[p + 1] && rgb[p + 1] === rgb[p + 2])) n++;
  }
  return n;
}

before(async () => {
  shots = await mkdtemp(path.join(tmpdir(), 'aigw-console-seg-'));
  gateway = await startGateway({
    modelsDir: await makeModelsDir(['brain']),
    config: {
      http: {
        auth: {
          basic: [
            { user: USERS.admin.username, password: USERS.admin.password, role: 'admin' },
            { user: USERS.viewer.username, password: USERS.viewer.password, role: 'read' },
          ],
        },
      },
    },
  });
  base = `http://127.0.0.1:${gateway.httpPort}`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await gateway?.dispose();
});

test('the study page shows the brain SEG over its largest slice; refused without PHI rights', async () => {
  const sent = await gateway.store(SERIES, { aet: 'MRSCANNER' });
  assert.equal(sent.code, 0, sent.stderr);

  const admin = await browser.newContext({ viewport: SIZES[0], httpCredentials: USERS.admin });
  const page = await admin.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  await page.goto(`${base}/#/studies`);
  const row = page.locator(`tr[data-study="${STUDY}"]`);
  await row.locator('.badge.done').waitFor({ timeout: 240_000 });
  for (const size of SIZES) {
    await page.setViewportSize(size);
    await page.waitForTimeout(300);
    assert.equal(await horizontalOverflow(page), 0, `no horizontal scroll at ${size.width}×${size.height}`);
  }
  await page.setViewportSize(SIZES[0]!);

  // The study page: the brain model's report with its overlay and caption.
  await row.locator(`a[href="#/study/${STUDY}"]`).click();
  const figure = page.locator(`.report[data-model="${BRAIN}"] figure.seg-overlay`);
  await figure.waitFor();
  await page.waitForFunction(() => {
    const img = document.querySelector('img.overlay') as HTMLImageElement | null;
    return img !== null && img.complete && img.naturalWidth > 0;
  });
  const slice = figure.locator('.overlay-slice');
  await slice.waitFor();
  const caption = await figure.locator('figcaption').innerText();
  const m = /slice (\d+) of (\d+), largest area/.exec(await slice.innerText());
  assert.ok(m, caption);
  assert.equal(Number(m[2]), 35, 'of the 35 slices of the series');
  assert.ok(Number(m[1]) >= 1 && Number(m[1]) <= 35);
  assert.match(caption, /White matter/);
  assert.match(caption, /Grey matter/);
  for (const size of SIZES) {
    await page.setViewportSize(size);
    await page.waitForTimeout(300);
    // The study page re-renders as it polls: between two renders the figure has no box for a moment.
    await figure.waitFor({ state: 'visible' });
    let box = await figure.boundingBox();
    for (let i = 0; box === null && i < 20; i++) {
      await page.waitForTimeout(100);
      box = await figure.boundingBox();
    }
    assert.ok(box, `the overlay is shown at ${size.width}×${size.height}`);
    assert.ok(box.x + box.width <= size.width, `the overlay fits ${size.width}×${size.height}`);
    await page.screenshot({
      path: path.join(shots, `study-seg-${size.width}x${size.height}.png`),
      fullPage: true,
    });
  }

  // The PNG itself, through the API: the caption's facts, and pixels of each segment's colour.
  const factsRes = await get(`/api/studies/${STUDY}/segmentations/${BRAIN}/overlay.json`);
  assert.equal(factsRes.status, 200);
  const facts = (await factsRes.json()) as OverlayFacts;
  assert.equal(facts.slice, Number(m[1]));
  assert.equal(facts.slices, 35);
  assert.deepEqual(
    facts.segments.map((s) => s.label),
    ['White matter', 'Grey matter'],
  );
  const res = await get(`/api/studies/${STUDY}/segmentations/${BRAIN}/overlay.png`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'image/png');
  const png = rgbPngPixels(Buffer.from(await res.arrayBuffer()));
  assert.ok(Math.max(png.width, png.height) <= 256, 'at most 256 px');
  for (const s of facts.segments) {
    assert.ok(s.area > 0, s.label);
    const coloured = countColoured(png.rgb, s.colour);
    assert.ok(coloured > 0, `${s.label}: ${coloured} pixels of its colour`);
  }
  await admin.close();

  // A role without the PHI permission: no overlay on the page, and the API refuses it.
  const viewer = await browser.newContext({ viewport: SIZES[0], httpCredentials: USERS.viewer });
  const vpage = await viewer.newPage();
  vpage.on('pageerror', (err) => pageErrors.push(err.message));
  await vpage.goto(`${base}/#/study/${STUDY}`);
  await vpage.locator(`.report[data-model="${BRAIN}"] .overlay-refused`).waitFor();
  assert.equal(await vpage.locator('img.overlay').count(), 0);
  await vpage.screenshot({ path: path.join(shots, 'study-seg-no-phi.png'), fullPage: true });
  for (const ext of ['png', 'json'])
    assert.equal(
      (await get(`/api/studies/${STUDY}/segmentations/${BRAIN}/overlay.${ext}`, USERS.viewer)).status,
      403,
    );
  await viewer.close();
  assert.deepEqual(pageErrors, []);
  console.log(`console SEG screenshots in ${shots}`);
});
