import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue, QueueEvents, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { metrics } from '../../../src/observability/metrics.ts';
import { loadModels, type LoadedModel } from '../../../src/models/registry.ts';
import { QUEUE, type DeliveryJob, type InferenceJob } from '../../../src/pipeline/jobs.ts';
import { keys, type WorkerHeartbeat } from '../../../src/pipeline/keys.ts';
import { createInferenceProcessor } from '../../../src/inference/processor.ts';
import { writeModelResults } from '../../../src/reports/write-results.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';
import { openModel, type LoadedModelSession } from '../../../src/inference/run-model.ts';
import { WorkerHeartbeatPublisher } from '../../../src/inference/runtime/heartbeat.ts';

// The inference processor inside a real BullMQ Worker on a real Redis (unique prefix): bad images fail
// their own job with a clear reason while the worker carries on; concurrent jobs share micro-batches;
// the heartbeat and the provider metric report what the worker runs.

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const samples = path.resolve(repoRoot, '../shared/dicom-samples');
const CT = path.join(samples, 'compressed/same-ct-image/ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm');
const J2K = path.join(samples, 'compressed/same-ct-image/ct_1.2.840.10008.1.2.4.90_jpeg2000-lossless.dcm');
const NO_PIXELS = path.join(samples, 'malformed/no-pixeldata-dx-agfa.dcm');
const CT_SERIES = path.join(samples, 'ct-series/philips-ingenuity-head-phantom-5mm');
const UNIFORMITY = 'image-uniformity';

const prefix = `test-worker-${process.pid}-${Date.now()}`;
let redis: Redis;
let dir: string;
let store: FilesystemObjectStore;
let model: LoadedModel;
let index: StudyIndex;
let inference: Queue<InferenceJob>;
let delivery: Queue<DeliveryJob>;
let events: QueueEvents;
let studyCounter = 0;
/** Connections handed to BullMQ, which leaves passed-in connections open: closed in after(). */
const connections: Redis[] = [];

function connection(): Redis {
  const c = redis.duplicate();
  connections.push(c);
  return c;
}

before(async () => {
  redis = new Redis('redis://127.0.0.1:6379', { maxRetriesPerRequest: null });
  dir = await mkdtemp(path.join(tmpdir(), 'worker-'));
  store = new FilesystemObjectStore(dir);
  await store.init();
  model = (await loadModels(path.join(repoRoot, 'models'))).models.find((m) => m.manifest.id === UNIFORMITY)!;
  assert.ok(model, 'the built-in model loads');
  index = new StudyIndex(redis, prefix);
  inference = new Queue(QUEUE.inference, { connection: redis, prefix });
  delivery = new Queue(QUEUE.delivery, { connection: redis, prefix });
  events = new QueueEvents(QUEUE.inference, { connection: connection(), prefix });
  await events.waitUntilReady();
});

after(async () => {
  await events?.close();
  await inference?.obliterate({ force: true }).catch(() => undefined);
  await delivery?.obliterate({ force: true }).catch(() => undefined);
  await inference?.close();
  await delivery?.close();
  const leftover = await redis.keys(`${prefix}:*`);
  if (leftover.length) await redis.del(...leftover);
  for (const c of connections) c.disconnect();
  redis?.disconnect();
  await rm(dir, { recursive: true, force: true });
});

/** A study of the given files in the index; returns its inference job payload. */
async function study(files: string[]): Promise<InferenceJob> {
  const studyUid = `2.25.${process.pid}${++studyCounter}`;
  const seriesUid = `${studyUid}.1`;
  for (const [i, file] of files.entries()) {
    const sopInstanceUid = `${studyUid}.1.${i + 1}`;
    // In the store under its key, as ingest leaves it: the processor finds it from the UIDs alone.
    await store.put(objectKey.instance({ studyUid, seriesUid, sopInstanceUid }), await readFile(file));
    await index.recordInstance({
      studyUid,
      seriesUid,
      sopInstanceUid,
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      transferSyntaxUid: '1.2.840.10008.1.2.1',
      size: 1,
      callingAe: 'TEST',
      callingAddress: '127.0.0.1',
      receivedAt: Date.now(),
      modality: 'CT',
      instanceNumber: i + 1,
    });
  }
  const { id, version } = model.manifest;
  return {
    studyUid,
    seriesUids: [seriesUid],
    modelId: id,
    modelVersion: version,
    destinations: [],
    priority: 5,
    run: 1,
  };
}

function startWorker(session: LoadedModelSession, concurrency: number): Worker<InferenceJob> {
  const sessions = new Map([[`${session.model.manifest.id}@${session.model.manifest.version}`, session]]);
  const processor = createInferenceProcessor({
    index,
    deliveryQueue: delivery,
    store,
    sessions,
    writeResults: (r) => writeModelResults({ ...r, index, store }),
  });
  return new Worker(QUEUE.inference, processor, { connection: connection(), prefix, concurrency });
}

/** Resolves with the job's outcome: its return value, or the reason it failed. */
async function outcome(
  job: Job<InferenceJob>,
): Promise<{ ok: true; value: unknown } | { ok: false; reason: string }> {
  try {
    return { ok: true, value: await job.waitUntilFinished(events, 60_000) };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
}

test('bad images fail their own job with a clear reason; the worker goes on to the next job', async () => {
  // A corrupt JPEG 2000 code stream: the start-of-codestream marker broken.
  const corrupt = path.join(dir, 'corrupt-j2k.dcm');
  const bytes = await readFile(J2K);
  const soc = bytes.indexOf(Buffer.from([0xff, 0x4f, 0xff, 0x51]));
  assert.ok(soc > 0, 'the J2K file has a start-of-codestream marker');
  bytes.fill(0x00, soc, soc + 64);
  await writeFile(corrupt, bytes);
  // An unsupported photometric interpretation, written by dcmtk into a copy of a good image.
  const palette = path.join(dir, 'palette.dcm');
  await copyFile(CT, palette);
  execFileSync('dcmodify', ['-nb', '-m', '(0028,0004)=PALETTE COLOR', palette]);

  const session = await openModel(model, { executionProviders: ['cpu'], deviceId: 0, strict: false });
  const worker = startWorker(session, 2);
  try {
    const bad = {
      corrupt: await inference.add('infer', await study([corrupt])),
      noPixels: await inference.add('infer', await study([NO_PIXELS])),
      palette: await inference.add('infer', await study([palette])),
    };
    const good = await inference.add('infer', await study([CT]));
    const results = {
      corrupt: await outcome(bad.corrupt),
      noPixels: await outcome(bad.noPixels),
      palette: await outcome(bad.palette),
      good: await outcome(good),
    };
    const reason = (r: (typeof results)[keyof typeof results]) => (r.ok ? 'completed' : r.reason);
    assert.match(
      reason(results.corrupt),
      /none of the 1 images could be used: .*could not decode 1\.2\.840\.10008\.1\.2\.4\.90/,
    );
    assert.match(
      reason(results.noPixels),
      /none of the 1 images could be used: .*no Pixel Data \(7FE0,0010\)/,
    );
    assert.match(
      reason(results.palette),
      /none of the 1 images could be used: .*PALETTE COLOR .*not supported/,
    );
    assert.equal(reason(results.good), 'completed');
    // Permanent failures (UnrecoverableError) are not retried.
    for (const job of Object.values(bad)) {
      const state = await inference.getJob(job.id!);
      assert.equal(await state!.getState(), 'failed');
      assert.equal(state!.attemptsMade, 1);
    }

    // Still up: the next job after the failures runs normally.
    assert.ok(worker.isRunning());
    const next = await outcome(await inference.add('infer', await study([CT])));
    assert.equal(next.ok, true);
  } finally {
    await worker.close();
    await session.close();
  }
});

test('a report that cannot be built fails its job once, with the reason, and is not retried', async () => {
  // A source whose Study Instance UID is not a valid UID (a component with a leading zero): the SR, which
  // must go into that study, cannot be written on this try or any other.
  const badUid = path.join(dir, 'bad-study-uid.dcm');
  await copyFile(CT, badUid);
  execFileSync('dcmodify', ['-nb', '-m', '(0020,000D)=1.2.03.4', badUid]);

  const session = await openModel(model, { executionProviders: ['cpu'], deviceId: 0, strict: false });
  const worker = startWorker(session, 1);
  try {
    const job = await inference.add('infer', await study([badUid]), {
      attempts: 3,
      backoff: { type: 'fixed', delay: 10 },
    });
    const r = await outcome(job);
    assert.equal(r.ok, false);
    assert.match((r as { reason: string }).reason, /the SR cannot be built: .*StudyInstanceUID/);
    const state = (await inference.getJob(job.id!))!;
    assert.equal(await state.getState(), 'failed');
    assert.equal(state.attemptsMade, 1, 'an UnrecoverableError is not retried');
    assert.ok(worker.isRunning());
  } finally {
    await worker.close();
    await session.close();
  }
});

test('concurrent jobs share one micro-batch (worker concurrency × manifest batch limit)', async () => {
  const files = [CT, ...['I10.dcm', 'I100.dcm'].map((f) => path.join(CT_SERIES, f))];
  const jobs = 4;
  // Batch limit = every image of every job, and a wait longer than the test: the one batch is run
  // only when all four jobs have queued their images, so the test cannot pass without sharing.
  const shared: LoadedModel = { ...model, manifest: { ...model.manifest, batchLimit: jobs * files.length } };
  const session = await openModel(shared, {
    executionProviders: ['cpu'],
    deviceId: 0,
    strict: false,
    maxWaitMs: 600_000,
  });
  const batchSizes: number[] = [];
  const run = session.session.run.bind(session.session);
  session.session.run = ((feeds: Parameters<typeof run>[0], ...rest: unknown[]) => {
    batchSizes.push(Object.values(feeds)[0]!.dims[0]!);
    return (run as (...a: unknown[]) => ReturnType<typeof run>)(feeds, ...rest);
  }) as typeof session.session.run;

  const worker = startWorker(session, jobs);
  try {
    const added = await Promise.all(
      Array.from({ length: jobs }, async () => inference.add('infer', await study(files))),
    );
    const results = await Promise.all(added.map(outcome));
    assert.ok(
      results.every((r) => r.ok),
      JSON.stringify(results),
    );
    assert.deepEqual(batchSizes, [jobs * files.length]);
    for (const r of results) assert.equal((r as { value: { images: number } }).value.images, files.length);
  } finally {
    await worker.close();
    await session.close();
  }
});

test('heartbeat in Redis and the provider metric report what the worker runs; removed on stop', async () => {
  const session = await openModel(model, { executionProviders: ['cuda', 'cpu'], deviceId: 0, strict: false });
  const text = await metrics.metrics();
  assert.match(
    text,
    new RegExp(`aigw_execution_provider\\{model="${UNIFORMITY}",provider="${session.provider}"\\} 1`),
  );

  const beat = new WorkerHeartbeatPublisher({
    redis,
    prefix,
    concurrency: 3,
    providers: { [UNIFORMITY]: session.provider },
    intervalMs: 50,
    workerId: 'test-worker-1',
  });
  const read = async (): Promise<WorkerHeartbeat | undefined> => {
    const raw = await redis.hget(keys.workers(prefix), 'test-worker-1');
    return raw ? (JSON.parse(raw) as WorkerHeartbeat) : undefined;
  };
  try {
    await beat.start();
    const first = await read();
    assert.ok(first);
    assert.equal(first.pid, process.pid);
    assert.deepEqual(first.providers, { [UNIFORMITY]: session.provider });
    assert.deepEqual(first.models, [UNIFORMITY]);
    assert.equal(first.concurrency, 3);
    assert.equal(typeof first.gpu, 'string');
    assert.equal(first.jobsProcessed, 0);

    beat.recordJob(7);
    beat.recordJob(2);
    // The next beats carry the counts and a later timestamp.
    let latest = first;
    while (latest.jobsProcessed === 0) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      latest = (await read())!;
    }
    assert.equal(latest.jobsProcessed, 2);
    assert.equal(latest.imagesProcessed, 9);
    assert.ok(latest.lastHeartbeat >= first.lastHeartbeat);
    assert.equal(latest.startedAt, first.startedAt);

    // A worker that died long ago (and garbage) is removed by the live one's next beat; one that died
    // recently stays listed, so the console can show it as dead.
    const now = Date.now();
    await redis.hset(keys.workers(prefix), {
      'dead-long-ago': JSON.stringify({
        ...latest,
        workerId: 'dead-long-ago',
        lastHeartbeat: now - 2 * 3600_000,
      }),
      'dead-recently': JSON.stringify({ ...latest, workerId: 'dead-recently', lastHeartbeat: now - 60_000 }),
      garbage: 'not json',
    });
    const deadline = Date.now() + 5000;
    while ((await redis.hexists(keys.workers(prefix), 'dead-long-ago')) === 1 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.deepEqual((await redis.hkeys(keys.workers(prefix))).sort(), ['dead-recently', 'test-worker-1']);
    await redis.hdel(keys.workers(prefix), 'dead-recently');
  } finally {
    await beat.stop();
    await session.close();
  }
  assert.equal(await read(), undefined);
  assert.doesNotMatch(await metrics.metrics(), new RegExp(`aigw_execution_provider\\{model="${UNIFORMITY}"`));
});
