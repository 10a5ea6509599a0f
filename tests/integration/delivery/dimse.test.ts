// DIMSE C-STORE destination against a real Orthanc: the SR and a SEG arrive, a second delivery of
// the same object is idempotent, and network failures are transient.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema } from '../../../src/config/schema.ts';
import { DimseDestination } from '../../../src/delivery/destinations/dimse.ts';
import { TransientDeliveryError, PermanentDeliveryError } from '../../../src/delivery/destination.ts';
import { createDestinations } from '../../../src/delivery/registry.ts';
import { buildSegmentation } from '../../../src/reports/seg/segmentation.ts';
import { buildMeasurementReport } from '../../../src/reports/sr/tid1500.ts';
import { freePort, parseDicom } from '../../helpers/dicom-tools.ts';
import { startOrthanc, type OrthancInstance } from '../../helpers/orthanc.ts';
import { whiteMatterResult } from '../../helpers/reports.ts';

const SR_UID = '2.25.400000000000000000000000000000000001';
const SEG_UID = '2.25.400000000000000000000000000000000003';

let orthanc: OrthancInstance;
let sr: Buffer;
let seg: Buffer;
let studyUid: string;

before(async () => {
  orthanc = await startOrthanc({ aet: 'PACS' });
  const { result, headers, studyUid: study } = whiteMatterResult(0, 3);
  studyUid = study;
  sr = buildMeasurementReport({
    result,
    sourceHeader: headers[0]!,
    sopInstanceUid: SR_UID,
    seriesInstanceUid: '2.25.400000000000000000000000000000000002',
  });
  seg = buildSegmentation({
    result,
    sourceHeaders: headers,
    sopInstanceUid: SEG_UID,
    seriesInstanceUid: '2.25.400000000000000000000000000000000004',
  })!;
});

after(async () => {
  await orthanc?.stop();
});

const destination = () =>
  new DimseDestination('pacs-dimse', {
    host: '127.0.0.1',
    port: orthanc.dicomPort,
    aeTitle: 'PACS',
    callingAeTitle: 'AIGATEWAY',
    timeoutMs: 10_000,
  });

async function instancesInOrthanc(): Promise<{ uid: string; modality: string }[]> {
  const ids = await orthanc.restJson<string[]>('/instances');
  return Promise.all(
    ids.map(async (id) => {
      const tags = await orthanc.restJson<Record<string, string>>(`/instances/${id}/simplified-tags`);
      return { uid: tags.SOPInstanceUID!, modality: tags.Modality! };
    }),
  );
}

test('C-STORE delivers the SR and the SEG to Orthanc; a duplicate delivery is idempotent', async () => {
  const dest = destination();
  const receipt = await dest.deliver(sr, { studyUid, sopInstanceUid: SR_UID });
  assert.equal(receipt.kind, 'dimse');
  assert.deepEqual(receipt.warnings, []);
  assert.equal(receipt.location, `dicom://PACS@127.0.0.1:${orthanc.dicomPort}`);
  await dest.deliver(seg, { studyUid, sopInstanceUid: SEG_UID });
  // Same object again (a redelivered job): Orthanc keeps one copy.
  await dest.deliver(sr, { studyUid, sopInstanceUid: SR_UID });
  const stored = (await instancesInOrthanc()).sort((a, b) => a.uid.localeCompare(b.uid));
  assert.deepEqual(stored, [
    { uid: SR_UID, modality: 'SR' },
    { uid: SEG_UID, modality: 'SEG' },
  ]);
  // Both objects file under the source study, next to the images.
  const ids = await orthanc.restJson<string[]>('/instances');
  for (const id of ids) {
    const res = await orthanc.rest(`/instances/${id}/file`);
    const back = parseDicom(Buffer.from(await res.arrayBuffer()));
    assert.equal(back.StudyInstanceUID, studyUid);
  }
});

test('a closed port is a transient failure; an unparsable object is permanent', async () => {
  const dest = new DimseDestination('nowhere', {
    host: '127.0.0.1',
    port: await freePort(),
    aeTitle: 'PACS',
    callingAeTitle: 'AIGATEWAY',
    timeoutMs: 5_000,
  });
  await assert.rejects(dest.deliver(sr, { studyUid, sopInstanceUid: SR_UID }), (e: unknown) => {
    assert.ok(e instanceof TransientDeliveryError, String(e));
    assert.match((e as Error).message, /nowhere.*PACS@127\.0\.0\.1/);
    return true;
  });
  const broken = Buffer.concat([sr.subarray(0, 200), Buffer.from([0xff, 0xff, 0xff])]);
  await assert.rejects(
    destination().deliver(broken, { studyUid, sopInstanceUid: SR_UID }),
    PermanentDeliveryError,
  );
});

test('config: a dimse destination is built by the registry; the calling AE defaults to ours', () => {
  const config = configSchema.parse({
    dimse: { aeTitle: 'MYGW' },
    destinations: { pacs: { kind: 'dimse', host: '127.0.0.1', port: 104, aeTitle: 'PACS' } },
  });
  const map = createDestinations(config);
  const d = map.get('pacs');
  assert.ok(d instanceof DimseDestination);
  assert.equal(d.kind, 'dimse');
  assert.equal((d as unknown as { opts: { callingAeTitle: string } }).opts.callingAeTitle, 'MYGW');
  assert.throws(() =>
    configSchema.parse({ destinations: { pacs: { kind: 'dimse', host: 'h', port: 104, aeTitle: 'A\\B' } } }),
  );
  assert.throws(() =>
    configSchema.parse({ destinations: { pacs: { kind: 'dimse', host: 'h', port: 0, aeTitle: 'A' } } }),
  );
});
