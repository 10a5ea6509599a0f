// The trend charts' store against a real Redis: ingest counts kept in memory and flushed (one pipeline, no
// round trip per instance), new studies told apart by the index script, failures by stage and calling AE,
// reports and positive reports per model from the index, sampled queue depths, latency from the turnaround
// log; the hour (1-minute points) and the day (10-minute points, the turnaround minutes kept as long), and
// every key expiring. Then the gateway's alert gauges at scrape time.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Worker } from 'bullmq';
import { collectHealth, collectSloStatus, jobFailures, metrics } from '../../../src/observability/metrics.ts';
import { markStudiesFailedOnFinalFailure } from '../../../src/pipeline/failed-jobs.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { StudyIndex, type InstanceRecord } from '../../../src/pipeline/study-index.ts';
import {
  readTrends,
  recordQueueDepths,
  TrendCounter,
  TRENDS_TTL_S,
  trendField,
} from '../../../src/pipeline/trends.ts';
import { TurnaroundLog } from '../../../src/pipeline/turnaround.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';

const prefix = `test-trends-${process.pid}-${Date.now()}`;
let redis: Redis;

before(() => {
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
});

after(async () => {
  const left = await redis.keys(`${prefix}*`);
  if (left.length) await redis.del(...left);
  redis.disconnect();
});

let n = 0;
const uid = () => `2.25.${process.pid}${Date.now()}${++n}`;
function instance(studyUid: string, callingAe: string): InstanceRecord {
  const seriesUid = `${studyUid}.1`;
  return {
    studyUid,
    seriesUid,
    sopInstanceUid: uid(),
    sopClassUid: '1.2.840.10008.5.1.4.1.1.7',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    size: 1,
    callingAe,
    callingAddress: '127.0.0.1',
    receivedAt: Date.now(),
  };
}

test('the hour: counts flushed from memory, new studies, failures, positive rate, queues, latency', async () => {
  const p = `${prefix}-hour`;
  const now = Date.UTC(2030, 0, 1, 12, 30, 20);
  const minute = (m: number) => now - m * 60_000;
  const index = new StudyIndex(redis, p);

  // Ingest: the index script says which instance opened a study; counted in memory until a flush.
  let clock = minute(5);
  const counter = new TrendCounter(redis, p, () => clock);
  const [s1, s2] = [uid(), uid()];
  for (const [study, ae] of [
    [s1, 'CT_ROOM'],
    [s1, 'CT_ROOM'],
    [s1, 'CT_ROOM'],
    [s2, 'MR_ROOM'],
  ] as const) {
    const r = await index.recordInstance(instance(study, ae));
    counter.instance(r.newStudy);
  }
  // A resent instance of a known study is not a new study.
  assert.equal((await index.recordInstance(instance(s2, 'MR_ROOM'))).newStudy, false);
  assert.equal(await redis.exists(keys.trends(p, Math.floor(minute(5) / 60_000))), 0, 'nothing written yet');
  clock = minute(2);
  counter.instance(false);
  counter.instance(false);
  await counter.flush();
  // Two minutes' hashes, each expiring after a day and some.
  const k5 = keys.trends(p, Math.floor(minute(5) / 60_000));
  assert.deepEqual(await redis.hgetall(k5), { [trendField.instances()]: '4', [trendField.studies()]: '2' });
  const ttl = await redis.ttl(k5);
  assert.ok(ttl > 24 * 3600 && ttl <= TRENDS_TTL_S, `ttl ${ttl}`);

  // Reports: counted by the index with the findings, positive or not.
  const finding = (model: string, positive: boolean) => ({
    model,
    version: '1',
    run: 1,
    srUid: uid(),
    rows: [],
    positive,
  });
  await index.setReportFindings(s1, finding('cxr', true), minute(3));
  await index.setReportFindings(s2, finding('cxr', false), minute(3));
  await index.setReportFindings(s2, finding('cxr', false), minute(3));
  await index.setReportFindings(s2, finding('cxr', true), minute(3));
  await index.setReportFindings(s1, finding('blank', false), minute(1));

  // Queue depths: the last sample of a minute stands.
  await recordQueueDepths(redis, p, [{ queue: 'inference', jobs: 9 }], minute(4));
  await recordQueueDepths(redis, p, [{ queue: 'inference', jobs: 3 }], minute(4));
  await recordQueueDepths(redis, p, [{ queue: 'delivery', jobs: 0 }], minute(1));

  // Latency: the turnaround log's minutes.
  const log = new TurnaroundLog(redis, p);
  for (const s of [10, 20, 30, 40])
    await log.record({ lane: 'stat', model: 'cxr', rules: [], seconds: s, at: minute(3) });
  await log.record({ lane: 'routine', model: 'blank', rules: [], seconds: 100, at: minute(1) });
  // Over an hour ago: outside the hour.
  await log.record({ lane: 'stat', model: 'cxr', rules: [], seconds: 5, at: minute(70) });

  // Failures: a real BullMQ job failing for good, its study's calling AE looked up.
  const queueName = `trends-fail-${process.pid}`;
  const queue = new Queue(queueName, { connection: redis, prefix: p });
  const worker = new Worker(
    queueName,
    async (): Promise<unknown> => {
      throw new Error('model exploded');
    },
    { connection: redis, prefix: p },
  );
  const before = (await jobFailures.get()).values.find(
    (v) => v.labels.stage === 'inference' && v.labels.calling_ae === 'CT_ROOM',
  );
  markStudiesFailedOnFinalFailure(worker, index, 'inference', { redis, prefix: p });
  const failed = new Promise<void>((resolve) => worker.on('failed', () => resolve()));
  await queue.add('x', { studyUid: s1 }, { attempts: 1 } as Parameters<Queue['add']>[2]);
  await failed;
  const failKey = keys.trends(p, Math.floor(Date.now() / 60_000));
  for (let i = 0; i < 50 && !(await redis.hexists(failKey, trendField.failure('inference', 'CT_ROOM'))); i++)
    await new Promise((r) => setTimeout(r, 50));
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  const afterFail = (await jobFailures.get()).values.find(
    (v) => v.labels.stage === 'inference' && v.labels.calling_ae === 'CT_ROOM',
  );
  assert.equal((afterFail?.value ?? 0) - (before?.value ?? 0), 1, 'aigw_job_failures_total counted');
  // That failure happened now, not at `now` (2030): chart it from the real clock below.
  const real = await readTrends(redis, p, 'hour');
  assert.deepEqual(
    real.failuresByStage.map((f) => [f.stage, f.count.at(-1)]),
    [['inference', 1]],
  );
  assert.deepEqual(
    real.failuresByAe.map((f) => [f.callingAe, f.count.at(-1)]),
    [['CT_ROOM', 1]],
  );

  const t = await readTrends(redis, p, 'hour', now);
  assert.equal(t.t.length, 60);
  assert.equal(t.stepSeconds, 60);
  assert.equal(t.t.at(-1), Math.floor(now / 60_000) * 60, 'the last point is the current minute');
  const at = (m: number) => t.t.indexOf(Math.floor(minute(m) / 60_000) * 60);
  assert.equal(t.instancesPerMinute[at(5)], 4);
  assert.equal(t.studiesPerMinute[at(5)], 2);
  assert.equal(t.instancesPerMinute[at(2)], 2);
  assert.equal(t.studiesPerMinute[at(2)], 0);
  assert.equal(
    t.instancesPerMinute.reduce((a, b) => a + b),
    6,
  );
  const cxr = t.positiveRate.find((r) => r.model === 'cxr')!;
  assert.equal(cxr.reports[at(3)], 4);
  assert.equal(cxr.rate[at(3)], 0.5);
  assert.equal(cxr.rate[at(2)], null, 'no reports: no rate');
  assert.equal(t.positiveRate.find((r) => r.model === 'blank')!.rate[at(1)], 0);
  assert.deepEqual(
    t.queues.map((q) => [q.queue, q.jobs[at(4)], q.jobs[at(1)]]),
    [
      ['delivery', null, 0],
      ['inference', 3, null],
    ],
  );
  const stat = t.latency.lanes.find((l) => l.lane === 'stat')!;
  assert.ok(Math.abs(stat.p50[at(3)]! - 20) / 20 < 0.03, `p50 ${stat.p50[at(3)]}`);
  assert.ok(Math.abs(stat.p95[at(3)]! - 40) / 40 < 0.03, `p95 ${stat.p95[at(3)]}`);
  assert.equal(stat.p95.filter((v) => v !== null).length, 1, 'the sample over an hour old is out');
  assert.deepEqual(
    t.latency.models.map((m) => m.model),
    ['blank', 'cxr'],
  );
  assert.deepEqual(t.failuresByStage, [], 'no failure in 2030');

  // The day: 10-minute points, sums averaged per minute; the sample 70 minutes old is in.
  const day = await readTrends(redis, p, 'day', now);
  assert.equal(day.t.length, 144);
  assert.equal(day.stepSeconds, 600);
  const point = (m: number) => day.t.findLastIndex((s) => s * 1000 <= minute(m));
  assert.equal(day.instancesPerMinute[point(5)], (4 + (point(2) === point(5) ? 2 : 0)) / 10);
  assert.equal(day.latency.lanes.find((l) => l.lane === 'stat')!.p50.filter((v) => v !== null).length, 2);
  assert.equal(day.queues.find((q) => q.queue === 'inference')!.jobs[point(4)], 3);
});

test('a flush that fails keeps its counts for the next one', async () => {
  const p = `${prefix}-retry`;
  // A fail-fast connection, like the ingest one: commands fail at once while it is down.
  const conn = new Redis(REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
  });
  conn.on('error', () => undefined);
  await conn.connect();
  const ended = new Promise((r) => conn.once('end', r));
  conn.disconnect(); // Redis away
  await ended;
  const counter = new TrendCounter(conn, p);
  counter.instance(true);
  await assert.rejects(counter.flush());
  await conn.connect(); // back
  counter.instance(false);
  await counter.close();
  conn.disconnect();
  const t = await readTrends(redis, p, 'hour');
  assert.equal(
    t.instancesPerMinute.reduce((a, b) => a + b),
    2,
  );
  assert.equal(
    t.studiesPerMinute.reduce((a, b) => a + b),
    1,
  );
});

test('alert gauges at scrape time: workers alive, breakers, spool disk, SLO p95 and target', async () => {
  collectHealth({
    workersAlive: async () => 0,
    breakers: async () => [
      { destination: 'pacs', open: true },
      { destination: 'archive', open: false },
    ],
    spool: async () => ({ freeBytes: 5e9, minFreeBytes: 1e9 }),
  });
  collectSloStatus(async () => [
    { rule: 'stat-chest', breached: true, p95: 90, targetP95Seconds: 60 },
    { rule: 'idle', breached: false, p95: null, targetP95Seconds: 30 },
  ]);
  const text = await metrics.metrics();
  assert.match(text, /^aigw_workers_alive 0$/m);
  assert.match(text, /^aigw_destination_breaker_open\{destination="pacs"\} 1$/m);
  assert.match(text, /^aigw_destination_breaker_open\{destination="archive"\} 0$/m);
  assert.match(text, /^aigw_spool_free_bytes 5000000000$/m);
  assert.match(text, /^aigw_spool_min_free_bytes 1000000000$/m);
  assert.match(text, /^aigw_slo_p95_seconds\{rule="stat-chest"\} 90$/m);
  assert.doesNotMatch(text, /^aigw_slo_p95_seconds\{rule="idle"\}/m, 'no p95 without deliveries');
  assert.match(text, /^aigw_slo_target_seconds\{rule="idle"\} 30$/m);
  assert.match(text, /^aigw_slo_breached\{rule="stat-chest"\} 1$/m);
});
