// The triage console in a real headless Chromium (Debian `chromium`, playwright-core) against a real
// gateway with the chest X-ray and blank-image models and basic users: the list shows each model's top
// finding (the chest model's on real chest radiographs from ../shared, a Present badge for a blank image
// synthesised here that image-uniformity flags), filters and sorts on the server, fits 1280×800 and
// 1920×1080 without horizontal scroll, opens a study page with the findings table read from the SR and
// thumbnails, and masks identifying data for a role without the PHI permission (views by others audited;
// none of it in the log). Screenshots are written to a temp dir.
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { type Browser, type BrowserContext } from 'playwright-core';
import { studyUidOf } from '../helpers/dicom-tools.ts';
import { basicAuth, horizontalOverflow, launchChromium, SIZES } from '../helpers/browser.ts';
import { makeModelsDir, SHARED, startGateway, type GatewayProcess } from '../helpers/gateway.ts';
import { writeSynthetic } from '../helpers/synthetic-dicom.ts';

const CHESTS = [
  path.join(SHARED, 'dicom-samples/xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm'),
  path.join(SHARED, 'dicom-samples/xray/cr-chest-pa-mono1-philips-wg04-RG1-j2k-lossy.dcm'),
];
const CXR = 'squeezenet1_1-cxr-pneumonia';
const CXR_CLASSES = /^(Bacterial pneumonia|Normal|Viral pneumonia)$/;
const BLANK_STUDY = '2.25.83724098123650918273645501';
const ACCESSION = 'ACC-BLANK-7731';
const PATIENT_ID = 'PID-SECRET-4410';
const PATIENT_NAME = 'Secretname^Patient';
const USERS = {
  admin: { username: 'lead', password: 'lead-password-1' },
  viewer: { username: 'itadmin', password: 'itadmin-password-1' },
};

let gateway: GatewayProcess;
let browser: Browser;
let shots: string;
let base: string;

async function api<T>(p: string, user = USERS.admin): Promise<T> {
  const res = await fetch(`${base}${p}`, { headers: { authorization: basicAuth(user) } });
  if (!res.ok) throw new Error(`GET ${p}: ${res.status}`);
  return (await res.json()) as T;
}

interface Row {
  studyUid: string;
  state: string;
  findings: {
    model: string;
    positive: boolean;
    top?: { meaning: string; probability?: number; presence?: string };
  }[];
  identity?: { accessionNumber?: string; patientId?: string; patientName?: string; masked: boolean };
}

async function context(
  user: { username: string; password: string },
  size = SIZES[0]!,
): Promise<BrowserContext> {
  return browser.newContext({ viewport: size, httpCredentials: user });
}

before(async () => {
  shots = await mkdtemp(path.join(tmpdir(), 'aigw-console-'));
  gateway = await startGateway({
    modelsDir: await makeModelsDir(['cxr', 'uniformity']),
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

test('triage list, filters, study page, layout, and a role without PHI rights', async () => {
  // A blank image: uniform pixels, which image-uniformity (models/image-uniformity/model.json) flags.
  const blank = path.join(shots, 'blank.dcm');
  await writeSynthetic(
    blank,
    {
      StudyInstanceUID: BLANK_STUDY,
      SeriesInstanceUID: `${BLANK_STUDY}.1`,
      SOPInstanceUID: `${BLANK_STUDY}.1.1`,
      Modality: 'OT',
      StudyDescription: 'Blank test image',
      AccessionNumber: ACCESSION,
      PatientID: PATIENT_ID,
      PatientName: PATIENT_NAME,
      Rows: 128,
      Columns: 128,
      BitsStored: 12,
      HighBit: 11,
      PixelRepresentation: 0,
    },
    new Uint16Array(128 * 128).fill(1000),
  );
  const chestUids = CHESTS.map(studyUidOf);

  const admin = await context(USERS.admin);
  const page = await admin.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  await page.goto(`${base}/#/studies`);
  await page.waitForSelector('#whoami:has-text("lead (admin)")');

  // The Philips radiograph is JPEG 2000 (lossy): storescu proposes that transfer syntax with -xw.
  for (const file of CHESTS) {
    const stored = await gateway.store([file], { args: file.includes('j2k') ? ['-xw'] : [] });
    assert.equal(stored.code, 0, stored.stderr);
  }
  const sent = await gateway.store([blank], { aet: 'BLANKER' });
  assert.equal(sent.code, 0, sent.stderr);

  // Every study ends done, live in the list (no reload).
  for (const uid of [...chestUids, BLANK_STUDY])
    await page.locator(`tr[data-study="${uid}"] .badge.done`).waitFor({ timeout: 120_000 });

  // The chest model's top finding, as read back from its SR, in the list for each real radiograph.
  const listed = await api<{ rows: Row[] }>('/api/worklist?limit=50');
  for (const uid of chestUids) {
    const row = listed.rows.find((r) => r.studyUid === uid)!;
    const cxr = row.findings.find((f) => f.model === CXR);
    assert.ok(cxr?.top, `${uid}: a chest finding`);
    assert.match(cxr.top.meaning, CXR_CLASSES);
    assert.equal(cxr.top.presence, 'Present');
    const cell = page.locator(`tr[data-study="${uid}"] .finding[data-model="${CXR}"]`);
    const text = await cell.innerText();
    assert.ok(text.includes(cxr.top.meaning), text);
    assert.match(text, /\d+(\.\d)?%/, 'with its probability');
  }
  // The blank image: image-uniformity's finding Present, with the positive badge.
  const blankRow = page.locator(`tr[data-study="${BLANK_STUDY}"]`);
  const flagged = blankRow.locator('.finding[data-model="image-uniformity"] .badge.positive');
  assert.equal(await flagged.innerText(), 'Present');
  assert.match(await blankRow.innerText(), /Quality Issue/);
  assert.match(await blankRow.innerText(), /OT/);
  assert.match(await blankRow.innerText(), /Blank test image/);
  assert.equal(await blankRow.locator('td.accession').innerText(), ACCESSION, 'admin sees the accession');
  assert.equal((await blankRow.innerText()).includes(BLANK_STUDY), false, 'UIDs are shortened');
  assert.equal(await blankRow.locator('button.copy').getAttribute('data-copy'), BLANK_STUDY);

  // Layout at both sizes: no horizontal scroll on the list.
  for (const size of SIZES) {
    await page.setViewportSize(size);
    await page.waitForTimeout(300);
    assert.equal(await horizontalOverflow(page), 0, `no horizontal scroll at ${size.width}×${size.height}`);
    await page.screenshot({
      path: path.join(shots, `studies-${size.width}x${size.height}.png`),
      fullPage: true,
    });
  }
  await page.setViewportSize(SIZES[0]!);

  // Filters (server-side): positive finding, modality, AE, model; then sort by a column.
  const chestRow = page.locator(`tr[data-study="${chestUids[0]}"]`);
  // "Positive": a finding other than Normal is Present (the weak chest model may call a class on a real
  // radiograph); the list shows exactly the studies the API says are positive.
  const positive = (uid: string) =>
    listed.rows.find((r) => r.studyUid === uid)!.findings.some((f) => f.positive);
  assert.equal(positive(BLANK_STUDY), true);
  await page.check('#positive-filter');
  await page.locator('#pager:has-text("of ")').waitFor();
  await page.waitForFunction(
    (n) => document.querySelectorAll('tbody tr').length === n,
    [BLANK_STUDY, ...chestUids].filter(positive).length,
  );
  for (const uid of chestUids)
    assert.equal(await page.locator(`tr[data-study="${uid}"]`).count(), positive(uid) ? 1 : 0, uid);
  await blankRow.waitFor();
  await page.uncheck('#positive-filter');
  await chestRow.waitFor();
  await page.selectOption('#modality-filter', 'OT');
  await chestRow.waitFor({ state: 'detached' });
  await page.selectOption('#modality-filter', '');
  await page.selectOption('#ae-filter', 'BLANKER');
  await chestRow.waitFor({ state: 'detached' });
  await page.selectOption('#ae-filter', '');
  await page.selectOption('#model-filter', CXR);
  await blankRow.waitFor({ state: 'detached' });
  await chestRow.waitFor();
  await page.selectOption('#model-filter', '');
  await page.selectOption('#state-filter', 'failed');
  await blankRow.waitFor({ state: 'detached' });
  await page.selectOption('#state-filter', '');
  await blankRow.waitFor();
  await page.click('th[data-sort="modality"]'); // descending: OT before CR
  await page.waitForFunction(
    (uid) => document.querySelector('tbody tr')?.getAttribute('data-study') === uid,
    BLANK_STUDY,
  );
  await page.click('th[data-sort="modality"]'); // ascending: CR first
  await page.waitForFunction(
    (uid) => document.querySelector('tbody tr')?.getAttribute('data-study') !== uid,
    BLANK_STUDY,
  );

  // The study page: findings table from the SR, series with thumbnails, routing, timeline.
  await blankRow.locator(`a[href="#/study/${BLANK_STUDY}"]`).click();
  const report = page.locator('.report[data-model="image-uniformity"]');
  await report.waitFor();
  assert.match(await report.innerText(), /DCM 113010\s+Quality Issue\s+\d+(\.\d)?%\s+Present/);
  await page.locator('#timeline li[data-type="delivered"]').first().waitFor();
  await page.click('nav a[data-page="studies"]');
  await page.locator(`tr[data-study="${chestUids[0]}"] a[href="#/study/${chestUids[0]}"]`).click();
  const thumb = page.locator('img.thumb').first();
  await thumb.waitFor();
  await page.waitForFunction(() => {
    const img = document.querySelector('img.thumb') as HTMLImageElement | null;
    return img !== null && img.complete && img.naturalWidth > 0;
  });
  // The chest report as a table: the most probable class, Present, and each class's probability.
  const chestReport = await page.locator(`.report[data-model="${CXR}"]`).innerText();
  assert.match(chestReport, /SCT \d+\s+(Bacterial pneumonia|Normal|Viral pneumonia)\s+\d+(\.\d)?%\s+Present/);
  for (const c of ['Bacterial pneumonia', 'Normal', 'Viral pneumonia'])
    assert.ok(chestReport.includes(`${c} `), c);
  assert.match(await page.locator('#study-identity').innerText(), /CR/);
  for (const size of SIZES) {
    await page.setViewportSize(size);
    await page.screenshot({
      path: path.join(shots, `study-${size.width}x${size.height}.png`),
      fullPage: true,
    });
  }
  // The thumbnail itself: a small PNG, behind auth.
  const sop = await thumb.getAttribute('data-sop');
  const png = await fetch(`${base}/api/studies/${chestUids[0]}/instances/${sop}/thumbnail.png`, {
    headers: { authorization: basicAuth(USERS.admin) },
  });
  assert.equal(png.headers.get('content-type'), 'image/png');
  const bytes = Buffer.from(await png.arrayBuffer());
  assert.equal(bytes.subarray(1, 4).toString('latin1'), 'PNG');
  assert.ok(Math.max(bytes.readUInt32BE(16), bytes.readUInt32BE(20)) <= 256, 'at most 256 px');
  assert.equal(
    (await fetch(`${base}/api/studies/${chestUids[0]}/instances/${sop}/thumbnail.png`)).status,
    401,
  );
  await admin.close();

  // A role without PHI rights: masked in the list, the study page and the API; actions disabled.
  const viewer = await context(USERS.viewer);
  const vpage = await viewer.newPage();
  vpage.on('pageerror', (err) => pageErrors.push(err.message));
  await vpage.goto(`${base}/#/studies`);
  await vpage.waitForSelector('#whoami:has-text("itadmin (read)")');
  const vrow = vpage.locator(`tr[data-study="${BLANK_STUDY}"]`);
  await vrow.waitFor();
  assert.equal(await vrow.locator('td.accession').innerText(), '•••');
  assert.equal(await vrow.locator('button[data-action="reprocess"]').isDisabled(), true);
  await vpage.screenshot({ path: path.join(shots, 'studies-no-phi.png'), fullPage: true });
  await vrow.locator(`a[href="#/study/${BLANK_STUDY}"]`).click();
  await vpage.locator('.report[data-model="image-uniformity"]').waitFor();
  const html = await vpage.content();
  for (const secret of [ACCESSION, PATIENT_ID, 'Secretname'])
    assert.equal(html.includes(secret), false, secret);
  const masked = await api<Row>(`/api/studies/${BLANK_STUDY}`, USERS.viewer);
  assert.deepEqual(masked.identity, {
    accessionNumber: '•••',
    patientId: '•••',
    patientName: '•••',
    masked: true,
  });
  // Searching by accession finds nothing for this role.
  assert.equal((await api<{ total: number }>(`/api/worklist?q=${ACCESSION}`, USERS.viewer)).total, 0);
  assert.equal((await api<{ total: number }>(`/api/worklist?q=${ACCESSION}`)).total, 1);
  await viewer.close();

  // Each view of identifying data is audited, by whom; none by the role without the permission.
  const views = await api<{ actor: string; action: string; target: string }[]>('/api/audit?type=action');
  const phiViews = views.filter((a) => a.action === 'view-phi');
  assert.ok(phiViews.some((a) => a.actor === 'lead' && a.target === BLANK_STUDY));
  assert.ok(phiViews.some((a) => a.actor === 'lead' && a.target.startsWith('study list')));
  assert.equal(phiViews.filter((a) => a.actor === 'itadmin').length, 0);
  // No identifying data in the gateway's log.
  const log = await readFile(gateway.logPath, 'utf8');
  for (const secret of [ACCESSION, PATIENT_ID, 'Secretname'])
    assert.equal(log.includes(secret), false, secret);
  assert.deepEqual(pageErrors, []);
  console.log(`console screenshots in ${shots}`);
});
