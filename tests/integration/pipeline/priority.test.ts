// Priority lanes and turnaround over real Redis and BullMQ: a STAT study overtakes routine ones at the
// study-complete (routing), inference and delivery queues; each delivered SR's receive → delivered time
// reaches the histogram and the per-minute log; a rule whose p95 is over its target shows as breached.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { routingRuleSchema, type RoutingRule } from '../../../src/config/schema.ts';
import { createDeliveryProcessor } from '../../../src/delivery/processor.ts';
import { FolderDestination } from '../../../src/delivery/destinations/folder.ts';
import { createInferenceProcessor } from '../../../src/inference/processor.ts';
import { openModel, type LoadedModelSession } from '../../../src/inference/run-model.ts';
import { loadModels } from '../../../src/models/registry.ts';
import { collectSloStatus, metrics } from '../../../src/observability/metrics.ts';
import { CompletionArmer } from '../../../src/pipeline/completion.ts';
import {
  QUEUE,
  inferenceQueueName,
  type DeliveryJob,
  type InferenceJob,
  type StudyCompleteJob,
} from '../../../src/pipeline/jobs.ts';
import { InferenceQueues } from '../../../src/pipeline/queues.ts';
import { StudyIndex, type InstanceRecord } from '../../../src/pipeline/study-index.ts';
import { sloTargets, TurnaroundLog } from '../../../src/pipeline/turnaround.ts';
import { writeModelResults } from '../../../src/reports/write-results.ts';
import { createRoutingProcessor } from '../../../src/routing/processor.ts';
import { ingestPriority } from '../../../src/routing/rules.ts';
import { REDIS_URL, REPO, SHARED } from '../../helpers/gateway.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';

const CT = path.join(
  SHARED,
  'dicom-samples/compressed/same-ct-image/ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm',
);
const CHEST = path.join(SHARED, 'dicom-samples/xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const UNIFORMITY = 'image-uniformity';

const prefix = `test-priority-${process.pid}-${Date.now()}`;
let redis: Redis;
let dir: string;
let store: FilesystemObjectStore;
let index: StudyIndex;
let session: LoadedModelSession;
const connections: Redis[] = [];
const queues: Queue[] = [];
const workers: Worker[] = [];
let counter = 0;

function connection(): Redis {
  const c = redis.duplicate();
  connections.push(c);
  return c;
}

function queue<T>(name: string): Queue<T> {
  const q = new Queue<T>(name, { connection: connection(), prefix });
  queues.push(q);
  return q;
}

const RULES: RoutingRule[] = [
  routingRuleSchema.parse({
    name: 'er-chest',
    match: { callingAE: 'ER_CR', Modality: 'CR' },
    models: [UNIFORMITY],
    destinations: ['out'],
    priority: 'stat',
    slo: { p95Seconds: 60 },
  }),
  // A target no real delivery meets: this rule's SLO must show as missed.
  routingRuleSchema.parse({
    name: 'ct-routine',
    match: { Modality: 'CT' },
    models: [UNIFORMITY],
    destinations: ['out'],
    slo: { p95Seconds: 0.001 },
  }),
];

function record(kind: 'stat' | 'routine'): InstanceRecord {
  const studyUid = `2.25.${process.pid}${Date.now() % 100000}${++counter}`;
  const stat = kind === 'stat';
  return {
    studyUid,
    seriesUid: `${studyUid}.1`,
    sopInstanceUid: `${studyUid}.1.1`,
    sopClassUid: stat ? '1.2.840.10008.5.1.4.1.1.1' : '1.2.840.10008.5.1.4.1.1.2',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    size: 1,
    callingAe: stat ? 'ER_CR' : 'MODALITY1',
    callingAddress: '127.0.0.1',
    receivedAt: Date.now(),
    modality: stat ? 'CR' : 'CT',
    rows: 512,
    columns: 512,
    instanceNumber: 1,
  };
}

/** Runs every job of the queue through `process` one at a time; resolves with the studies in the order taken. */
async function drain<T extends { studyUid: string }>(
  name: string,
  count: number,
  process: (job: Job<T>) => Promise<unknown>,
): Promise<string[]> {
  const order: string[] = [];
  const worker = new Worker<T>(
    name,
    async (job) => {
      order.push(job.data.studyUid);
      return process(job);
    },
    { connection: connection(), prefix, concurrency: 1 },
  );
  workers.push(worker);
  const failures: string[] = [];
  worker.on('failed', (job, err) => failures.push(`${job?.id}: ${err.message}`));
  const deadline = Date.now() + 60_000;
  let done = 0;
  worker.on('completed', () => done++);
  while (done + failures.length < count && Date.now() < deadline) await sleep(20);
  await worker.close();
  assert.deepEqual(failures, []);
  assert.equal(done, count, `${name}: ${done} of ${count} jobs done`);
  return order;
}

before(async () => {
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  dir = await mkdtemp(path.join(tmpdir(), 'priority-'));
  store = new FilesystemObjectStore(dir);
  await store.init();
  index = new StudyIndex(redis, prefix);
  const model = (await loadModels(path.join(REPO, 'models'))).models.find(
    (m) => m.manifest.id === UNIFORMITY,
  )!;
  session = await openModel(model);
});

after(async () => {
  for (const w of workers) await w.close();
  for (const q of queues) {
    await q.obliterate({ force: true }).catch(() => undefined);
    await q.close();
  }
  await session?.close();
  const leftover = await redis.keys(`${prefix}:*`);
  if (leftover.length) await redis.del(...leftover);
  for (const c of connections) c.disconnect();
  redis?.disconnect();
  await rm(dir, { recursive: true, force: true });
});

test('ingest priority: an instance takes the most urgent rule it meets; one priority for all costs nothing', () => {
  const priorityOf = ingestPriority(RULES)!;
  assert.ok(priorityOf);
  assert.equal(priorityOf(record('stat')), 1);
  assert.equal(priorityOf(record('routine')), 10);
  assert.equal(priorityOf({ ...record('stat'), callingAe: 'WARD_CR' }), 10, 'a CR from another AE');
  assert.equal(ingestPriority([RULES[1]!]), undefined);
  assert.equal(ingestPriority([]), undefined);
});

test('study-complete queue: a STAT study is routed before routine ones that were due before it', async () => {
  const studyComplete = queue<StudyCompleteJob>(QUEUE.studyComplete + '-armer');
  const armer = new CompletionArmer(studyComplete, 150, 0);
  const priorityOf = ingestPriority(RULES)!;
  const routine = Array.from({ length: 5 }, () => record('routine'));
  for (const r of routine) await armer.instanceStored(r.studyUid, priorityOf(r));
  // A study armed as routine, then a STAT instance of the same study: its routing job is raised.
  const mixed = record('routine');
  await armer.instanceStored(mixed.studyUid, priorityOf(mixed));
  const stat = record('stat');
  await armer.instanceStored(stat.studyUid, priorityOf(stat));
  await armer.instanceStored(mixed.studyUid, priorityOf({ ...record('stat'), studyUid: mixed.studyUid }));
  const raised = await studyComplete.getJob((await studyComplete.getDeduplicationJobId(mixed.studyUid))!);
  assert.equal(raised?.priority, 1, 'the later STAT instance raised the study’s routing job');

  await sleep(400); // every job is due
  const order = await drain<StudyCompleteJob>(studyComplete.name, 7, async () => sleep(10));
  assert.deepEqual(new Set(order.slice(0, 2)), new Set([stat.studyUid, mixed.studyUid]), order.join(' '));
  assert.deepEqual(
    order.slice(2),
    routine.map((r) => r.studyUid),
    'routine studies keep their order',
  );
});

test('routing → inference → delivery: STAT work is taken first at each queue and its turnaround is kept; a missed SLO shows', async () => {
  const studyComplete = queue<StudyCompleteJob>(QUEUE.studyComplete);
  // Every job here is for the one model: its queue.
  const inference = queue<InferenceJob>(inferenceQueueName(UNIFORMITY, '1.0.0'));
  const delivery = queue<DeliveryJob>(QUEUE.delivery);
  const routine = Array.from({ length: 3 }, () => record('routine'));
  const stat = record('stat');
  for (const r of [...routine, stat]) {
    // Stored as ingest stores it: the inference processor finds each image from its UIDs.
    await store.put(objectKey.instance(r), await readFile(r === stat ? CHEST : CT));
    await index.recordInstance(r);
  }
  // Routine studies complete first; nothing is taken until the STAT one is queued too.
  for (const r of [...routine, stat]) await studyComplete.add('study-complete', { studyUid: r.studyUid });

  const models = (await loadModels(path.join(REPO, 'models'))).models.map((m) => m.manifest);
  const routed = await drain<StudyCompleteJob>(
    QUEUE.studyComplete,
    4,
    createRoutingProcessor({
      index,
      inferenceQueues: new InferenceQueues(connection(), prefix),
      models: async () => models,
      rules: RULES,
      defaultDestination: 'out',
    }),
  );
  assert.equal(routed.length, 4);

  const statFirst = await index.get(stat.studyUid);
  const inferJobs = await inference.getJobs(['prioritized', 'waiting']);
  assert.equal(inferJobs.length, 4);
  const statInfer = inferJobs.find((j) => j.data.studyUid === stat.studyUid)!;
  assert.equal(statInfer.priority, 1);
  assert.deepEqual(statInfer.data.rules, ['er-chest']);
  assert.equal(statInfer.data.receivedAt, statFirst!.firstReceivedAt);
  for (const j of inferJobs.filter((x) => x !== statInfer)) assert.equal(j.priority, 10);

  const sessions = new Map([[`${session.model.manifest.id}@${session.model.manifest.version}`, session]]);
  const infer = createInferenceProcessor({
    index,
    deliveryQueue: delivery,
    store,
    sessions,
    writeResults: (r) => writeModelResults({ ...r, index, store }),
  });
  const inferred = await drain<InferenceJob>(inference.name, 4, infer);
  assert.equal(inferred[0], stat.studyUid, `inference order: ${inferred.join(' ')}`);

  const deliveryJobs = await delivery.getJobs(['prioritized', 'waiting']);
  assert.equal(deliveryJobs.length, 4, 'one SR per study');
  const statDelivery = deliveryJobs.find((j) => j.data.studyUid === stat.studyUid)!;
  assert.equal(statDelivery.priority, 1);
  assert.equal(statDelivery.data.model, UNIFORMITY);
  assert.equal(statDelivery.data.receivedAt, statFirst!.firstReceivedAt);
  assert.deepEqual(statDelivery.data.rules, ['er-chest']);
  for (const j of deliveryJobs.filter((x) => x !== statDelivery)) assert.equal(j.priority, 10);

  // Inference queued the STAT delivery first, so FIFO would deliver it first too: re-queue it, with the
  // options the inference processor gave it, behind the routine ones.
  await statDelivery.remove();
  await delivery.add(statDelivery.name, statDelivery.data, statDelivery.opts);
  const turnaround = new TurnaroundLog(redis, prefix, sloTargets(RULES));
  const folder = path.join(dir, 'out');
  const deliver = createDeliveryProcessor({
    destinations: new Map([['out', new FolderDestination('out', folder)]]),
    store,
    index,
    turnaround,
  });
  const delivered = await drain<DeliveryJob>(QUEUE.delivery, 4, (job) => deliver(job));
  assert.equal(delivered[0], stat.studyUid, `delivery order: ${delivered.join(' ')}`);
  assert.equal((await readdir(folder)).length, 4);

  const text = await metrics.metrics();
  assert.match(text, /aigw_study_turnaround_seconds_count\{priority="stat",model="image-uniformity"\} 1\n/);
  assert.match(
    text,
    /aigw_study_turnaround_seconds_count\{priority="routine",model="image-uniformity"\} 3\n/,
  );

  const summary = await turnaround.summary();
  assert.deepEqual(
    summary.lanes.map((l) => [l.lane, l.count]),
    [
      ['routine', 3],
      ['stat', 1],
    ],
  );
  const statLane = summary.lanes.find((l) => l.lane === 'stat')!;
  const measured = (Date.now() - statFirst!.firstReceivedAt) / 1000;
  assert.ok(statLane.p95! > 0 && statLane.p95! <= measured * 1.05, `${statLane.p95} s vs ${measured} s`);
  const slo = Object.fromEntries(summary.slos.map((s) => [s.rule, s]));
  assert.equal(slo['er-chest']?.breached, false);
  assert.equal(slo['er-chest']?.count, 1);
  assert.equal(slo['ct-routine']?.breached, true);
  assert.equal(slo['ct-routine']?.count, 3);

  collectSloStatus(async () => (await turnaround.summary()).slos);
  const after = await metrics.metrics();
  assert.match(after, /aigw_slo_breached\{rule="ct-routine"\} 1\n/);
  assert.match(after, /aigw_slo_breached\{rule="er-chest"\} 0\n/);
});

test('turnaround log: quantiles within 2.5 %, only the last hour counts, and every SLO is listed', async () => {
  let now = Date.UTC(2030, 0, 1, 12, 0, 0);
  const p = `${prefix}-log`;
  const log = new TurnaroundLog(
    redis,
    p,
    new Map([
      ['r', 50],
      ['idle', 10],
    ]),
    () => now,
  );
  // An hour and a minute ago: slow samples that must no longer count.
  for (let i = 0; i < 50; i++)
    await log.record({ lane: 'routine', model: 'm', rules: ['r'], seconds: 900, at: now - 61 * 60_000 });
  for (let s = 1; s <= 100; s++)
    await log.record({ lane: 'routine', model: 'm', rules: ['r'], seconds: s, at: now - s * 1000 });
  const summary = await log.summary();
  const lane = summary.lanes[0]!;
  assert.equal(lane.count, 100);
  assert.ok(Math.abs(lane.p50! - 50) / 50 < 0.025, `p50 ${lane.p50}`);
  assert.ok(Math.abs(lane.p95! - 95) / 95 < 0.025, `p95 ${lane.p95}`);
  const r = summary.slos.find((x) => x.rule === 'r')!;
  assert.equal(r.breached, true, 'p95 95 s over a 50 s target');
  const idle = summary.slos.find((x) => x.rule === 'idle')!;
  assert.deepEqual([idle.count, idle.p95, idle.breached], [0, null, false]);
  // The keys expire on their own, after a day and some (the trend charts' longest range).
  const ttl = await redis.ttl(`${p}:turnaround:${Math.floor((now - 1000) / 60_000)}`);
  assert.ok(ttl > 24 * 3600 && ttl <= 26 * 3600, `ttl ${ttl}`);
  now += 2 * 3600_000;
  assert.deepEqual((await log.summary()).lanes, []);
  const keys = await redis.keys(`${p}:*`);
  if (keys.length) await redis.del(...keys);
});
