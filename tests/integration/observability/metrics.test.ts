// /metrics: queue depths read from BullMQ at scrape time, stage histograms from finished jobs, and the
// metric families the console promises, through the real admin app.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { createAdminApp, listen } from '../../../src/admin/app.ts';
import { destinationSummaries } from '../../../src/delivery/registry.ts';
import { configSchema } from '../../../src/config/schema.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { collectQueueDepths, observeStageTimings } from '../../../src/observability/metrics.ts';
import { QUEUE } from '../../../src/pipeline/jobs.ts';
import { allQueues, createQueues, type Queues } from '../../../src/pipeline/queues.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';

const prefix = `aigw-metrics-${randomBytes(4).toString('hex')}`;
let redis: Redis;
let queues: Queues;
let server: Server;
let base: string;
let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-metrics-'));
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const config = configSchema.parse({ redis: { url: REDIS_URL, prefix, autoStart: false }, dataDir: dir });
  queues = createQueues(redis, config);
  collectQueueDepths(() => allQueues(queues));
  const app = createAdminApp({
    config,
    redis,
    index: new StudyIndex(redis, prefix),
    queues,
    spoolDir: dir,
    store: new FilesystemObjectStore(dir),
    destinations: destinationSummaries(config),
  });
  server = await listen(app, '127.0.0.1', 0);
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

after(async () => {
  await new Promise((r) => server.close(r));
  await queues.close();
  const all = await redis.keys(`${prefix}:*`);
  if (all.length) await redis.del(...all);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

async function scrape(): Promise<string> {
  const res = await fetch(`${base}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
  return res.text();
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('queue depths are read from BullMQ at each scrape', async () => {
  const before = await scrape();
  assert.equal(sample(before, 'aigw_queue_jobs{queue="delivery",state="delayed"}'), 0);
  for (let i = 0; i < 3; i++)
    await queues.delivery.add(
      'deliver',
      { studyUid: '1.2.3', sopInstanceUid: `1.2.3.${i}`, destination: 'd' },
      { delay: 60_000 },
    );
  const after = await scrape();
  assert.equal(sample(after, 'aigw_queue_jobs{queue="delivery",state="delayed"}'), 3);
  assert.equal(sample(after, 'aigw_queue_jobs{queue="inference",state="waiting"}'), 0);
  await queues.delivery.drain(true);
  assert.equal(sample(await scrape(), 'aigw_queue_jobs{queue="delivery",state="delayed"}'), 0);
  // A model's queue that did not exist at start is found at the next scrape (the set of known queues).
  const series = 'aigw_queue_jobs{queue="inference.late-model@2.1",state="prioritized"}';
  assert.equal(sample(after, series), undefined);
  await queues.inference.add(
    {
      studyUid: '1.2.3',
      seriesUids: ['1.2.3.1'],
      modelId: 'late-model',
      modelVersion: '2.1',
      destinations: [],
      priority: 10,
      run: 1,
    },
    { priority: 10 },
  );
  assert.equal(sample(await scrape(), series), 1);
});

test('finished jobs feed the stage histograms (processing and queue wait)', async () => {
  const worker = new Worker(QUEUE.studyComplete, async () => 'routed', { connection: redis, prefix });
  observeStageTimings(worker, 'routing');
  const done = new Promise<void>((resolve) => worker.on('completed', () => resolve()));
  await queues.studyComplete.add('study-complete', { studyUid: '1.2.3.4' });
  await done;
  await worker.close();
  const text = await scrape();
  assert.equal(sample(text, 'aigw_stage_seconds_count{stage="routing"}'), 1);
  assert.equal(sample(text, 'aigw_stage_seconds_count{stage="routing_queue"}'), 1);
});

test('the metric families the console promises are exported', async () => {
  const text = await scrape();
  for (const family of [
    'aigw_instances_received_total',
    'aigw_bytes_received_total',
    'aigw_associations_total',
    'aigw_queue_jobs',
    'aigw_stage_seconds',
    'aigw_inference_seconds',
    'aigw_deliveries_total',
    'aigw_process_cpu_seconds_total',
  ])
    assert.match(text, new RegExp(`^# TYPE ${family} `, 'm'), family);
});
