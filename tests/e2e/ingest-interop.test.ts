// The real gateway process configured the way a hospital integrator would: known peers only, STOW-RS with a
// bearer token. Orthanc pushes a study by C-STORE, dcmsend pushes another, a client stores a third by STOW-RS;
// a stranger's storescu is rejected. All three studies appear in the index, and every association is in the
// Redis history the admin console reads.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import { readInstanceHeader } from '../../src/dicom/part10.ts';
import { keys, type AssociationRecord } from '../../src/pipeline/keys.ts';
import { REDIS_URL, makeModelsDir, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePort } from '../helpers/dicom-tools.ts';
import { SAMPLES, dcmtk, storeResponses } from '../helpers/ingest.ts';
import { startOrthanc, type OrthancInstance } from '../helpers/orthanc.ts';

const TOKEN = 'interop-stow-token-0123456789';
const VIA_ORTHANC = path.join(SAMPLES, 'xray', 'cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const VIA_DCMSEND = path.join(
  SAMPLES,
  'compressed',
  'same-ct-image',
  'ct_1.2.840.10008.1.2.4.80_jpeg-ls-lossless.dcm',
);
const VIA_STOW = path.join(SAMPLES, 'multiframe', 'enhanced-mr-10frames-small.dcm');

let orthanc: OrthancInstance;
let gateway: GatewayProcess;

let dimsePort: number;

before(async () => {
  dimsePort = await freePort();
  orthanc = await startOrthanc();
  gateway = await startGateway({
    modelsDir: await makeModelsDir([]),
    config: {
      dimse: {
        aeTitle: 'AIGATEWAY',
        host: '127.0.0.1',
        port: dimsePort, // overrides the port the helper picked
        peers: [{ aeTitle: 'ORTHANC', host: '127.0.0.1' }, { aeTitle: 'CT_DCMSEND' }],
      },
      stowrs: { auth: { bearer: [TOKEN] } },
      study: { quietPeriodMs: 60_000 },
    },
  });
  const put = await orthanc.rest('/modalities/aigw', {
    method: 'PUT',
    body: JSON.stringify({ AET: 'AIGATEWAY', Host: '127.0.0.1', Port: dimsePort }),
  });
  assert.ok(put.ok);
});

after(async () => {
  await gateway?.dispose();
  await orthanc?.stop();
});

test('peers store by C-STORE and STOW-RS; a stranger is rejected; associations are recorded', async () => {
  // Orthanc (a known peer) sends by C-STORE.
  const upload = await orthanc.rest('/instances', { method: 'POST', body: await readFile(VIA_ORTHANC) });
  const { ParentStudy } = (await upload.json()) as { ParentStudy: string };
  const store = await orthanc.rest('/modalities/aigw/store', {
    method: 'POST',
    body: JSON.stringify({ Resources: [ParentStudy], Synchronous: true }),
  });
  assert.ok(store.ok, `Orthanc C-STORE: ${store.status} ${await store.text()}`);

  // dcmsend as a known modality.
  const sent = await dcmtk('dcmsend', [
    '-v',
    '-aet',
    'CT_DCMSEND',
    '-aec',
    'AIGATEWAY',
    '127.0.0.1',
    String(dimsePort),
    VIA_DCMSEND,
  ]);
  assert.equal(sent.code, 0, sent.out);
  assert.match(sent.out, /with status SUCCESS/i, sent.out);

  // A stranger is turned away at the association, before any data.
  const stranger = await dcmtk('storescu', [
    '-v',
    '-aet',
    'STRANGER',
    '-aec',
    'AIGATEWAY',
    '127.0.0.1',
    String(dimsePort),
    VIA_DCMSEND,
  ]);
  assert.deepEqual(storeResponses(stranger.out), []);
  assert.match(stranger.out, /Association Rejected/);

  // STOW-RS with the bearer token, on the admin HTTP listener.
  const boundary = 'interop-boundary';
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`),
    await readFile(VIA_STOW),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  const stow = await fetch(`http://127.0.0.1:${gateway.httpPort}/dicomweb/studies`, {
    method: 'POST',
    headers: {
      'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
      Authorization: `Bearer ${TOKEN}`,
    },
    body: new Uint8Array(body),
  });
  assert.equal(stow.status, 200, await stow.text());

  for (const file of [VIA_ORTHANC, VIA_DCMSEND, VIA_STOW]) {
    const { studyUid } = await readInstanceHeader(file);
    await waitFor(`study ${studyUid} in the index`, async () => {
      const s = await gateway
        .api<{ instanceCount: number }>(`/api/studies/${studyUid}`)
        .catch(() => undefined);
      return s !== undefined && s.instanceCount === 1 ? s : undefined;
    });
  }

  const redis = new Redis(REDIS_URL);
  try {
    const records = (await redis.lrange(keys.associations(gateway.prefix), 0, -1)).map(
      (r) => JSON.parse(r) as AssociationRecord,
    );
    const find = (ae: string) => records.find((r) => r.callingAe === ae);
    assert.equal(find('ORTHANC')?.result, 'accepted');
    assert.equal(find('ORTHANC')?.stored, 1);
    assert.equal(find('CT_DCMSEND')?.stored, 1);
    assert.equal(find('STRANGER')?.result, 'rejected');
  } finally {
    redis.disconnect();
  }
});
