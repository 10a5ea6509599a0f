// Reconciliation reads the object store (store.list + parseInstanceKey), never a directory: instances the
// index lost are indexed again from their stored bytes, with no host path in their records, and their
// study's completion is re-armed; an unreadable object is reported and skipped.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { readInstanceHeader } from '../../../src/dicom/part10.ts';
import { QUEUE, type StudyCompleteJob } from '../../../src/pipeline/jobs.ts';
import { reconcileSpool } from '../../../src/pipeline/reconcile.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';
import { SHARED } from '../../helpers/gateway.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `aigw-test-reconcile-${randomBytes(4).toString('hex')}`;
const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
const SERIES = path.join(SHARED, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm');

after(async () => {
  const keys = await connection.keys(`${prefix}:*`);
  if (keys.length) await connection.del(...keys);
  connection.disconnect();
});

test('instances in the store that the index lost are indexed again from the store; strays are skipped', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-reconcile-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const store = new FilesystemObjectStore(dir);
  await store.init();
  const index = new StudyIndex(connection, prefix);
  const queue = new Queue<StudyCompleteJob>(QUEUE.studyComplete, { connection, prefix });
  t.after(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
  });

  const files = (await readdir(SERIES))
    .filter((f) => f.endsWith('.dcm'))
    .sort()
    .slice(0, 3)
    .map((f) => path.join(SERIES, f));
  const sizes = new Map<string, number>();
  let studyUid = '';
  for (const file of files) {
    const h = await readInstanceHeader(file);
    const bytes = await readFile(file);
    studyUid = h.studyUid!;
    sizes.set(h.sopInstanceUid!, bytes.length);
    await store.put(
      objectKey.instance({ studyUid, seriesUid: h.seriesUid!, sopInstanceUid: h.sopInstanceUid! }),
      bytes,
    );
  }
  // An object under a valid key whose bytes are no DICOM, and an outbox object (not an instance).
  const garbage = objectKey.instance({
    studyUid: '2.25.404',
    seriesUid: '2.25.404.1',
    sopInstanceUid: '2.25.404.1.1',
  });
  await store.put(garbage, Buffer.from('not a DICOM file at all'));
  await store.put(objectKey.outbox(studyUid, '2.25.9999'), Buffer.from('an SR'));

  const first = await reconcileSpool(store, index, queue, 60_000);
  assert.deepEqual(first, { studies: 2, reindexed: 3 });
  const records = await index.instances(studyUid);
  assert.deepEqual(records.map((r) => r.sopInstanceUid).sort(), [...sizes.keys()].sort());
  for (const r of records) {
    assert.equal('path' in r, false, 'no host path in the record');
    assert.equal(r.size, sizes.get(r.sopInstanceUid), 'the stored size');
    assert.equal(r.studyUid, studyUid);
    assert.ok(r.modality, 'header attributes read from the stored object');
  }
  assert.deepEqual(await index.instances('2.25.404'), [], 'the unreadable object is not indexed');
  const armed = await queue.getJobs(['delayed', 'waiting', 'prioritized']);
  assert.deepEqual(
    armed.map((j) => j.data.studyUid),
    [studyUid],
    'completion re-armed for the study that gained instances',
  );

  // A second pass finds nothing to add.
  const second = await reconcileSpool(store, index, queue, 60_000, { rearmReceiving: false });
  assert.deepEqual(second, { studies: 2, reindexed: 0 });
});
