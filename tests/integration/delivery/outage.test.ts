// Delivery semantics against a real Orthanc, through a real BullMQ delivery queue and worker (short
// backoff and cool-down): an SR waiting while the PACS is down arrives exactly once when it is back;
// a wrong password fails permanently with a clear reason, and the failed job replays once fixed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { deliveries } from '../../../src/observability/metrics.ts';
import { jobId, QUEUE, type DeliveryJob } from '../../../src/pipeline/jobs.ts';
import { createDeliveryProcessor } from '../../../src/delivery/processor.ts';
import { deliveryBackoffStrategy } from '../../../src/delivery/backoff.ts';
import { DELIVERY_BACKOFF } from '../../../src/pipeline/jobs.ts';
import { DestinationBreakers } from '../../../src/delivery/breaker.ts';
import type { Destination } from '../../../src/delivery/destination.ts';
import { DicomwebDestination } from '../../../src/delivery/destinations/dicomweb.ts';
import { replayFailedDeliveries } from '../../../src/delivery/replay.ts';
import { waitFor } from '../../helpers/gateway.ts';
import { startOrthanc, type OrthancInstance } from '../../helpers/orthanc.ts';
import { hemorrhageReport } from '../../helpers/reports.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';

let store: FilesystemObjectStore;

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `aigw-test-outage-${randomBytes(4).toString('hex')}`;
const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });

let orthanc: OrthancInstance;
let secured: OrthancInstance;
let dir: string;
let studyUid: string;
let queue: Queue<DeliveryJob>;
let worker: Worker<DeliveryJob>;
let breakers: DestinationBreakers;
const destinations = new Map<string, Destination>();

async function writeSr(uid: string): Promise<void> {
  const report = hemorrhageReport({
    slices: ['I10.dcm'],
    sopInstanceUid: uid,
    seriesInstanceUid: '2.25.5000',
  });
  studyUid = report.studyUid;
  await store.put(objectKey.outbox(studyUid, uid), report.sr);
}

function deliveryCount(destination: string, result: string): Promise<number> {
  return deliveries
    .get()
    .then(
      (m) =>
        m.values.find((v) => v.labels.destination === destination && v.labels.result === result)?.value ?? 0,
    );
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-outage-'));
  store = new FilesystemObjectStore(dir);
  await store.init();
  [orthanc, secured] = await Promise.all([
    startOrthanc(),
    startOrthanc({ aet: 'SECURED', auth: { user: 'gw', password: 'right-password' } }),
  ]);
  destinations.set('pacs', new DicomwebDestination('pacs', { url: orthanc.dicomwebUrl, timeoutMs: 5_000 }));
  destinations.set(
    'secured',
    new DicomwebDestination('secured', {
      url: secured.dicomwebUrl,
      timeoutMs: 5_000,
      auth: { type: 'basic', user: 'gw', password: 'wrong-password' },
    }),
  );
  queue = new Queue<DeliveryJob>(QUEUE.delivery, {
    connection,
    prefix,
    defaultJobOptions: {
      attempts: 200,
      backoff: { type: DELIVERY_BACKOFF, delay: 100 },
      removeOnFail: false,
    },
  });
  breakers = new DestinationBreakers(connection, prefix, { threshold: 3, cooldownMs: 400 });
  worker = new Worker<DeliveryJob>(
    QUEUE.delivery,
    createDeliveryProcessor({ destinations, store, index: new StudyIndex(connection, prefix), breakers }),
    {
      connection,
      prefix,
      concurrency: 2,
      settings: { backoffStrategy: deliveryBackoffStrategy({ baseMs: 100, maxMs: 400 }) },
    },
  );
});

after(async () => {
  await worker?.close();
  await queue?.obliterate({ force: true });
  await queue?.close();
  const keys = await connection.keys(`${prefix}:*`);
  if (keys.length) await connection.del(...keys);
  connection.disconnect();
  await Promise.all([orthanc?.stop(), secured?.stop()]);
  await rm(dir, { recursive: true, force: true });
});

async function newInstanceChanges(pacs: OrthancInstance): Promise<number> {
  const changes = await pacs.restJson<{ Changes: { ChangeType: string }[] }>('/changes?limit=1000');
  return changes.Changes.filter((c) => c.ChangeType === 'NewInstance').length;
}

test('Orthanc stopped while an SR waits, then started again: the SR arrives, exactly once', async () => {
  const uid = '2.25.500000000000000000000000000000000001';
  await writeSr(uid);
  await orthanc.halt();
  const id = jobId.delivery(uid, 'pacs');
  const job = await queue.add(
    'deliver',
    { studyUid, sopInstanceUid: uid, destination: 'pacs' },
    { jobId: id },
  );

  // The PACS is down: retries fail until the breaker opens; the job waits, it does not fail.
  await waitFor('the breaker to open', async () =>
    (await breakers.status('pacs'))?.breaker === 'open' ? true : undefined,
  );
  const waiting = await queue.getJob(id);
  assert.ok(['delayed', 'waiting', 'active'].includes(await waiting!.getState()));
  assert.match((await breakers.status('pacs'))!.lastError ?? '', /STOW-RS to pacs failed/);

  // A duplicate push of the same delivery while it waits is the same job.
  const dup = await queue.add(
    'deliver',
    { studyUid, sopInstanceUid: uid, destination: 'pacs' },
    { jobId: id },
  );
  assert.equal(dup.id, job.id);

  await orthanc.resume();
  await waitFor('the delivery to complete', async () =>
    (await (await queue.getJob(id))?.isCompleted()) ? true : undefined,
  );
  assert.equal(await newInstanceChanges(orthanc), 1, 'Orthanc stored the SR once');
  const stats = await orthanc.restJson<{ CountInstances: number }>('/statistics');
  assert.equal(stats.CountInstances, 1);
  assert.equal(await deliveryCount('pacs', 'success'), 1);
  const status = await breakers.status('pacs');
  assert.equal(status?.breaker, 'closed');
  assert.equal(status?.consecutiveFailures, 0);
  assert.ok(status?.lastSuccessAt);

  // Pushing the finished delivery again (a re-run of the inference job) does not deliver again.
  await queue.add('deliver', { studyUid, sopInstanceUid: uid, destination: 'pacs' }, { jobId: id });
  const again = await queue.getJob(id);
  assert.ok(await again!.isCompleted());
  assert.equal(await deliveryCount('pacs', 'success'), 1);
});

test('basic auth with a wrong password: a permanent failure with a clear reason; replay after the fix delivers', async () => {
  const uid = '2.25.500000000000000000000000000000000002';
  await writeSr(uid);
  const id = jobId.delivery(uid, 'secured');
  await queue.add('deliver', { studyUid, sopInstanceUid: uid, destination: 'secured' }, { jobId: id });
  const failed = await waitFor('the job to fail', async () => {
    const j = await queue.getJob(id);
    return j && (await j.isFailed()) ? j : undefined;
  });
  assert.equal(failed.attemptsMade, 1, 'not retried');
  assert.match(failed.failedReason, /HTTP 401 Unauthorized/);
  assert.match(failed.failedReason, /refused the basic credentials/);
  assert.match(failed.failedReason, /destinations\.secured\.auth/);
  assert.doesNotMatch(failed.failedReason, /wrong-password/, 'the reason never carries the secret');
  assert.equal((await breakers.status('secured'))?.breaker, 'closed', 'a refusal does not trip the breaker');

  // Replaying with the wrong password still fails; the admin fixes the password, then replays.
  const none = await replayFailedDeliveries(queue, { destination: 'pacs' });
  assert.deepEqual(none.replayed, []);
  destinations.set(
    'secured',
    new DicomwebDestination('secured', {
      url: secured.dicomwebUrl,
      timeoutMs: 5_000,
      auth: { type: 'basic', user: 'gw', password: 'right-password' },
    }),
  );
  const replay = await replayFailedDeliveries(queue, { destination: 'secured' });
  assert.deepEqual(replay.replayed, [id]);
  await waitFor('the replayed delivery', async () =>
    (await (await queue.getJob(id))?.isCompleted()) ? true : undefined,
  );
  assert.equal((await secured.restJson<{ CountInstances: number }>('/statistics')).CountInstances, 1);
  assert.equal(await queue.getFailedCount(), 0);
});
