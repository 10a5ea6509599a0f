// A modality's study becomes an AI report in the PACS: real Orthanc (DICOMweb) as the PACS, dcmtk
// storescu as the modality, the gateway as a child process running role `all`, Redis underneath.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { dciodvfy, dsrdump, runTool, readHeaderSync, studyUidOf } from '../helpers/dicom-tools.ts';
import { makeModelsDir, SHARED, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { fetchSeriesInstance, startOrthanc, type OrthancInstance } from '../helpers/orthanc.ts';
import { readReport, type ReportContent } from '../helpers/sr-content.ts';

const XRAY = path.join(SHARED, 'dicom-samples/xray');
const FUJI_CHEST = path.join(XRAY, 'cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const PHILIPS_CHEST_J2K = path.join(XRAY, 'cr-chest-pa-mono1-philips-wg04-RG1-j2k-lossy.dcm');

interface StudyRow {
  studyUid: string;
  state: string;
  callingAe: string;
  instanceCount: number;
  detail?: string;
}

let orthanc: OrthancInstance;
let gateway: GatewayProcess;
let workDir: string;

/** Finds the model's SR in the PACS by QIDO-RS and downloads it by WADO-RS. */
async function fetchReportFromPacs(
  studyUid: string,
  seriesDescription: RegExp,
): Promise<{ content: ReportContent; file: string }> {
  const part10 = await fetchSeriesInstance(orthanc, studyUid, 'SR', seriesDescription);
  const content = readReport(part10);
  const file = path.join(workDir, `${String(content.dataset.SOPInstanceUID)}.dcm`);
  writeFileSync(file, part10);
  return { content, file };
}

async function assertValidSr(file: string): Promise<void> {
  const report = await dciodvfy(file);
  assert.deepEqual(report.errors, [], `dciodvfy errors:\n${report.errors.join('\n')}`);
  const dump = await dsrdump(file);
  assert.equal(dump.code, 0, dump.stderr);
  assert.doesNotMatch(dump.stderr, /error/i);
}

before(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'aigw-e2e-sr-'));
  const modelsDir = await makeModelsDir(['cxr', 'uniformity']);
  // Orthanc must know the gateway's DIMSE port before it starts, and the gateway the PACS URL: start
  // Orthanc with a placeholder port, then the gateway, then point Orthanc at it through its REST API.
  orthanc = await startOrthanc();
  gateway = await startGateway({
    modelsDir,
    config: {
      destinations: { pacs: { kind: 'dicomweb', url: orthanc.dicomwebUrl } },
      defaultDestination: 'pacs',
      // With a PACS destination only known peers may store: the modality, and the PACS auto-routing.
      dimse: { peers: [{ aeTitle: 'MODALITY1' }, { aeTitle: 'ORTHANC' }] },
    },
  });
  const put = await orthanc.rest('/modalities/aigw', {
    method: 'PUT',
    body: JSON.stringify({ AET: 'AIGATEWAY', Host: '127.0.0.1', Port: gateway.dimsePort }),
  });
  assert.ok(put.ok, `registering the gateway in Orthanc: ${put.status}`);
});

after(async () => {
  await gateway?.dispose();
  await orthanc?.stop();
});

test('a modality pushes chest X-rays with storescu; SRs with the model findings land in the PACS', async () => {
  const files = [FUJI_CHEST, path.join(XRAY, 'cr-cervical-lat-mono1-agfa-16x16.dcm')];
  const echo = await runTool('echoscu', [
    '-aet',
    'MODALITY1',
    '-aec',
    'AIGATEWAY',
    '127.0.0.1',
    String(gateway.dimsePort),
  ]);
  assert.equal(echo.code, 0, echo.stderr);
  const sent = await gateway.store(files);
  assert.equal(sent.code, 0, `${sent.stdout}${sent.stderr}`);

  const { content, file } = await fetchReportFromPacs(studyUidOf(FUJI_CHEST), /SqueezeNet/i);
  await assertValidSr(file);
  assert.equal(content.dataset.StudyInstanceUID, studyUidOf(FUJI_CHEST));
  assert.equal(content.dataset.Modality, 'SR');
  const sourceSop = readHeaderSync(FUJI_CHEST).SOPInstanceUID;
  assert.deepEqual(content.referencedSopInstanceUids, [sourceSop]);
  // MODEL.md reference output for this file: 0.3372 / 0.3314 / 0.3314 (bacterial, normal, viral). The
  // classes are exclusive: one finding, the most probable class stated Present, with each class's
  // probability; never every class Absent.
  assert.equal(content.groups.length, 1, `one finding: ${JSON.stringify(content.groups)}`);
  const group = content.groups[0]!;
  assert.match(group.finding ?? '', /bacterial/i);
  assert.equal(group.qualitative, 'Present');
  assert.ok(Math.abs(group.probability! - 0.3372) < 0.001, `certainty ${group.probability}`);
  assert.match(group.algorithmName ?? '', /squeezenet/i);
  const expected: [RegExp, number][] = [
    [/bacterial/i, 0.3372],
    [/normal/i, 0.3314],
    [/viral/i, 0.3314],
  ];
  const classes = Object.entries(group.classes ?? {});
  assert.equal(classes.length, 3, JSON.stringify(group.classes));
  for (const [name, p] of expected) {
    const probability = classes.find(([meaning]) => name.test(meaning))?.[1];
    assert.ok(
      probability !== undefined && Math.abs(probability - p) < 0.001,
      `${name}: ${probability} vs ${p}`,
    );
  }

  // The 16×16 Agfa image is below every model's minimum size: the study ends 'no-model', with the
  // criterion that failed and the value seen, per series and model.
  const agfaStudy = studyUidOf(path.join(XRAY, 'cr-cervical-lat-mono1-agfa-16x16.dcm'));
  const agfa = await waitFor('the 16×16 study to be settled', async () => {
    const s = (await gateway.api<StudyRow[]>('/api/studies')).find((x) => x.studyUid === agfaStudy);
    return s?.state === 'no-model' ? s : undefined;
  });
  assert.match(agfa.detail ?? '', /no model accepts this study: .*rows: 16 < \d+/);
  const agfaDetail = await gateway.api<{
    series: { seriesUid: string; models: Record<string, { accepted: boolean; reasons: string[] }> }[];
  }>(`/api/studies/${agfaStudy}`);
  assert.equal(agfaDetail.series.length, 1);
  const decisions = Object.values(agfaDetail.series[0]!.models);
  assert.ok(decisions.length >= 1 && decisions.every((d) => !d.accepted && d.reasons.length > 0));
  assert.ok(
    decisions.some((d) => d.reasons.some((r) => /rows: 16 < \d+/.test(r))),
    JSON.stringify(decisions),
  );
  const fuji = await waitFor('the chest study to be done', async () => {
    const s = (await gateway.api<StudyRow[]>('/api/studies')).find(
      (x) => x.studyUid === studyUidOf(FUJI_CHEST),
    );
    return s?.state === 'done' ? s : undefined;
  });
  assert.equal(fuji.callingAe, 'MODALITY1');
  assert.equal(fuji.instanceCount, 1);
});

test('the PACS auto-routes a study to the gateway by C-STORE; the SR comes back by STOW-RS', async () => {
  const upload = await orthanc.rest('/instances', { method: 'POST', body: readFileSync(PHILIPS_CHEST_J2K) });
  assert.ok(upload.ok, `upload to Orthanc: ${upload.status}`);
  const { ParentStudy } = (await upload.json()) as { ParentStudy: string };
  const store = await orthanc.rest('/modalities/aigw/store', {
    method: 'POST',
    body: JSON.stringify({ Resources: [ParentStudy], Synchronous: true }),
  });
  assert.ok(store.ok, `Orthanc C-STORE to the gateway: ${store.status} ${await store.text()}`);

  const { content, file } = await fetchReportFromPacs(studyUidOf(PHILIPS_CHEST_J2K), /SqueezeNet/i);
  await assertValidSr(file);
  // MODEL.md reference for this JPEG 2000 file: 0.2050 / 0.5818 / 0.2132; a different JPEG 2000 decoder
  // may round differently, hence the looser tolerance.
  assert.equal(content.groups.length, 1);
  const normal = content.groups[0]!;
  assert.match(normal.finding ?? '', /normal/i);
  assert.equal(normal.qualitative, 'Present');
  assert.ok(Math.abs(normal.probability! - 0.5818) < 0.01, `normal: ${normal.probability}`);
});
