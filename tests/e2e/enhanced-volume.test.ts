// A scanner sends a brain MRI as one Enhanced MR multi-frame object: the gateway (role `all`, child
// process) segments it with the brain model and the PACS (real Orthanc) receives an SR and a SEG whose
// frames point at the source object's frames. dcmtk storescu plays the scanner.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { dciodvfy, mrSlices, parseDicom } from '../helpers/dicom-tools.ts';
import { assertSegFramesReferenceSource, writeEnhancedFromSlices } from '../helpers/enhanced-mr.ts';
import { makeModelsDir, startGateway, type GatewayProcess } from '../helpers/gateway.ts';
import { fetchSeriesInstance, startOrthanc, type OrthancInstance } from '../helpers/orthanc.ts';
import { readReport } from '../helpers/sr-content.ts';

const SOURCE_UID = '2.25.700001';

let orthanc: OrthancInstance;
let gateway: GatewayProcess;
let workDir: string;

before(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'aigw-e2e-enhanced-'));
  orthanc = await startOrthanc();
  gateway = await startGateway({
    modelsDir: await makeModelsDir(['brain']),
    config: {
      destinations: { pacs: { kind: 'dicomweb', url: orthanc.dicomwebUrl } },
      defaultDestination: 'pacs',
      // With a PACS destination only known peers may store.
      dimse: { peers: [{ aeTitle: 'SCANNER1' }] },
    },
  });
});

after(async () => {
  await gateway?.dispose();
  await orthanc?.stop();
  await rm(workDir, { recursive: true, force: true });
});

test('an Enhanced MR multi-frame brain series comes back as an SR and a SEG that references its frames', async () => {
  // The real 35-slice sagittal T1 series as one object, frames in reverse file order.
  const file = path.join(workDir, 'enhanced-mr.dcm');
  const header = await writeEnhancedFromSlices(mrSlices(0, 35).reverse(), file, {
    sopInstanceUid: SOURCE_UID,
    seriesInstanceUid: '2.25.700002',
  });
  const studyUid = header.StudyInstanceUID as string;
  const sent = await gateway.store([file], { aet: 'SCANNER1' });
  assert.equal(sent.code, 0, `${sent.stdout}${sent.stderr}`);

  // The SR: tissue volumes, and the source object listed once.
  const sr = readReport(await fetchSeriesInstance(orthanc, studyUid, 'SR', /MeshNet/i));
  assert.deepEqual(sr.referencedSopInstanceUids, [SOURCE_UID]);
  assert.ok(sr.groups.length >= 2, 'a measurement group per reported tissue');

  // The SEG: valid, in the source's frame of reference, each frame derived from one source frame and
  // placed where that frame lies, tissue on many of them.
  const segBytes = await fetchSeriesInstance(orthanc, studyUid, 'SEG', /segmentation/i);
  const segFile = path.join(workDir, 'seg.dcm');
  writeFileSync(segFile, segBytes);
  const report = await dciodvfy(segFile);
  assert.deepEqual(report.errors, [], report.output);
  const seg = parseDicom(segBytes);
  assert.equal(seg.FrameOfReferenceUID, header.FrameOfReferenceUID);
  const referenced = assertSegFramesReferenceSource(seg, header);
  assert.ok(referenced.size > 10, `tissue found on ${referenced.size} source frames`);
});
