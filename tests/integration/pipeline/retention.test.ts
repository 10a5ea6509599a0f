// Spool retention: images of a study go only after every delivery succeeded, the retention period has
// passed, and no delivery of the study is failed or still open in the queue.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { QUEUE, type DeliveryJob, type StudyCompleteJob } from '../../../src/pipeline/jobs.ts';
import type { InstanceRecord } from '../../../src/pipeline/instance-record.ts';
import { createInstanceRecorder } from '../../../src/pipeline/record-instance.ts';
import { InstanceAcceptor } from '../../../src/ingest/accept.ts';
import { DiskWatermark } from '../../../src/storage/disk-watermark.ts';
import { runRetention, type RetentionDeps, type RetentionPolicy } from '../../../src/pipeline/retention.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { finished } from 'node:stream/promises';
import { waitFor } from '../../helpers/gateway.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `aigw-test-spoolclean-${randomBytes(4).toString('hex')}`;
const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
const HOUR = 3_600_000;
const YEAR = 365 * 24 * HOUR;
/** Only spool retention at one hour; everything else kept (the soak test covers the rest). */
const SPOOL_ONLY: RetentionPolicy = {
  spoolMs: HOUR,
  outboxMs: YEAR,
  failedMs: YEAR,
  failedJobMs: YEAR,
  resultsMs: YEAR,
  studyRecordMs: YEAR,
};
const folders = (dir: string): Pick<RetentionDeps, 'resultsDir'> => ({
  resultsDir: path.join(dir, 'results'),
});
const CT_SLICE = path.resolve(
  import.meta.dirname,
  '../../../../shared/dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm/I10.dcm',
);

after(async () => {
  const keys = await connection.keys(`${prefix}*`);
  if (keys.length) await connection.del(...keys);
  connection.disconnect();
});

const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

test('only delivered studies past retention lose their spooled images; failed or open deliveries keep them', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-spoolclean-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const index = new StudyIndex(connection, prefix);
  const store = new FilesystemObjectStore(dir);
  await store.init();
  const spool = store.spool;
  const queue = new Queue<DeliveryJob>(QUEUE.delivery, {
    connection,
    prefix,
    defaultJobOptions: { removeOnFail: false },
  });
  t.after(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
  });

  const files: Record<string, string> = {};
  async function study(uid: string, outcome: 'delivered' | 'failed' | 'delivering'): Promise<void> {
    const file = spool.instancePath({ studyUid: uid, seriesUid: '1.2.3', sopInstanceUid: `${uid}.9` });
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, 'x');
    files[uid] = file;
    await index.recordInstance({
      studyUid: uid,
      seriesUid: '1.2.3',
      sopInstanceUid: `${uid}.9`,
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      transferSyntaxUid: '1.2.840.10008.1.2.1',
      size: 1,
      callingAe: 'MOD',
      callingAddress: '127.0.0.1',
      receivedAt: Date.now(),
    });
    await index.startRun(uid, 1, 1);
    await index.inferenceDone(uid, 1, 1);
    if (outcome === 'delivered') await index.deliveryDone(uid, 1);
    if (outcome === 'failed') await index.setState(uid, 'failed', 'delivery: HTTP 401');
  }
  await study('2.25.1001', 'delivered');
  await study('2.25.1002', 'delivered');
  await study('2.25.1003', 'failed');
  await study('2.25.1004', 'delivering');
  assert.equal((await index.get('2.25.1001'))?.state, 'done');

  // Study 1002 reached 'done', yet a delivery of it sits failed in the queue (e.g. a second destination
  // whose counter was already settled): an admin has not given it up, so its images stay.
  const worker = new Worker<DeliveryJob>(
    QUEUE.delivery,
    async () => {
      throw new UnrecoverableError('HTTP 400');
    },
    { connection, prefix },
  );
  t.after(() => worker.close());
  await queue.add('deliver', {
    studyUid: '2.25.1002',
    sopInstanceUid: '2.25.77',
    destination: 'pacs',
  });
  await waitFor('the job to fail', async () => ((await queue.getFailedCount()) === 1 ? true : undefined));

  // Within the retention period nothing goes.
  const early = await runRetention({
    index,
    store,
    deliveryQueue: queue,
    queues: [],
    ...folders(dir),
    policy: SPOOL_ONLY,
  });
  assert.deepEqual([early.studies, early.files], [[], 0]);
  for (const f of Object.values(files)) assert.ok(await exists(f));

  const later = await runRetention({
    index,
    store,
    deliveryQueue: queue,
    queues: [],
    ...folders(dir),
    policy: SPOOL_ONLY,
    now: () => Date.now() + 2 * HOUR,
  });
  assert.deepEqual([later.studies, later.files], [['2.25.1001'], 1]);
  assert.equal(await exists(files['2.25.1001']!), false);
  assert.deepEqual(await index.instances('2.25.1001'), [], 'the index follows the spool');
  for (const uid of ['2.25.1002', '2.25.1003', '2.25.1004']) assert.ok(await exists(files[uid]!), uid);
});

test('a PACS re-sending an instance while retention removes its study keeps the instance and its record', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-spoolrace-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const racePrefix = `${prefix}-race`;
  const index = new StudyIndex(connection, racePrefix);
  const store = new FilesystemObjectStore(dir);
  await store.init();
  const spool = store.spool;
  const disk = new DiskWatermark(dir, 0);
  await disk.refresh();
  const studyComplete = new Queue<StudyCompleteJob>(QUEUE.studyComplete, { connection, prefix: racePrefix });
  const deliveryQueue = new Queue<DeliveryJob>(QUEUE.delivery, { connection, prefix: racePrefix });
  t.after(async () => {
    await studyComplete.obliterate({ force: true });
    await Promise.all([studyComplete.close(), deliveryQueue.close()]);
  });
  // The real ingest path: acceptor → spool commit → the recorder every front door uses.
  const acceptor = new InstanceAcceptor({
    store,
    disk,
    onStored: createInstanceRecorder({ index, studyCompleteQueue: studyComplete, quietPeriodMs: HOUR }),
  });
  const bytes = await readFile(CT_SLICE);
  const send = async () => {
    const staged = store.stage();
    staged.stream.end(bytes);
    await finished(staged.stream);
    const outcome = await acceptor.accept(staged, { path: 'dimse', callingAe: 'PACS', address: '127.0.0.1' });
    assert.ok(outcome.ok, 'stored');
    return outcome.instance;
  };
  const first = await send();
  await index.startRun(first.studyUid, 1, 1);
  await index.inferenceDone(first.studyUid, 1, 0);
  assert.equal((await index.get(first.studyUid))?.state, 'done');

  let resent: InstanceRecord | undefined;
  const result = await runRetention({
    index,
    store,
    deliveryQueue,
    queues: [],
    ...folders(dir),
    policy: SPOOL_ONLY,
    now: () => Date.now() + 2 * HOUR,
    // The window the issue names: retention has re-checked the study and is about to remove its files.
    afterRecheck: async () => {
      await new Promise((r) => setTimeout(r, 5));
      resent = await send();
    },
  });
  assert.ok(resent, 'the re-send was acknowledged during the pass');
  assert.ok(await exists(spool.instancePath(first)), 'the acknowledged copy is still in the spool');
  assert.deepEqual(
    (await index.instances(first.studyUid)).map((i) => i.receivedAt),
    [resent.receivedAt],
    'and its record is the new one',
  );
  assert.equal((await index.get(first.studyUid))?.state, 'receiving', 'the re-send re-opened the study');
  assert.equal(result.files, 0);
});
