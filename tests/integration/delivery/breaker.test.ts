// The per-destination circuit breaker (Redis) and the capped backoff of the delivery queue.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { deliveries } from '../../../src/observability/metrics.ts';
import { DELIVERY_BACKOFF, jobId, QUEUE, type DeliveryJob } from '../../../src/pipeline/jobs.ts';
import { createDeliveryProcessor } from '../../../src/delivery/processor.ts';
import { deliveryBackoffStrategy, deliveryDelay, retryWindowMs } from '../../../src/delivery/backoff.ts';
import { DestinationBreakers } from '../../../src/delivery/breaker.ts';
import {
  PermanentDeliveryError,
  TransientDeliveryError,
  type Destination,
} from '../../../src/delivery/destination.ts';
import { configSchema } from '../../../src/config/schema.ts';
import { waitFor } from '../../helpers/gateway.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';
import type { ObjectStore } from '../../../src/storage/object-store.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `aigw-test-breaker-${randomBytes(4).toString('hex')}`;
const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });

/** A delivery queue and one worker (fast backoff) under its own prefix, removed when the test ends. */
function deliveryQueue(
  t: TestContext,
  qPrefix: string,
  destinations: Map<string, Destination>,
  breakers: DestinationBreakers,
  store: ObjectStore,
): { queue: Queue<DeliveryJob>; worker: Worker<DeliveryJob> } {
  const queue = new Queue<DeliveryJob>(QUEUE.delivery, {
    connection,
    prefix: qPrefix,
    defaultJobOptions: { attempts: 10, backoff: { type: DELIVERY_BACKOFF, delay: 50 }, removeOnFail: false },
  });
  const worker = new Worker<DeliveryJob>(
    QUEUE.delivery,
    createDeliveryProcessor({ destinations, store, index: new StudyIndex(connection, qPrefix), breakers }),
    {
      connection,
      prefix: qPrefix,
      concurrency: 1,
      settings: { backoffStrategy: deliveryBackoffStrategy({ baseMs: 50, maxMs: 50 }) },
    },
  );
  t.after(async () => {
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
    const keys = await connection.keys(`${qPrefix}:*`);
    if (keys.length) await connection.del(...keys);
  });
  return { queue, worker };
}

after(async () => {
  const keys = await connection.keys(`${prefix}:*`);
  if (keys.length) await connection.del(...keys);
  connection.disconnect();
});

test('breaker: opens after N consecutive transient failures, one probe after the cool-down, closes on success', async () => {
  let now = 1_000_000;
  const b = new DestinationBreakers(connection, prefix, { threshold: 3, cooldownMs: 60_000 }, () => now);
  assert.deepEqual(await b.gate('pacs'), { pass: true, probe: false }, 'unknown destination: closed');
  assert.equal(await b.record('pacs', 'dicomweb', 'transient', 'HTTP 503'), 'closed');
  assert.equal(await b.record('pacs', 'dicomweb', 'transient', 'HTTP 503'), 'closed');
  assert.equal(await b.record('pacs', 'dicomweb', 'transient', 'connection refused'), 'open');
  let status = await b.status('pacs');
  assert.equal(status?.breaker, 'open');
  assert.equal(status?.consecutiveFailures, 3);
  assert.equal(status?.openedAt, now);
  assert.equal(status?.lastError, 'connection refused');
  assert.equal(status?.kind, 'dicomweb');

  now += 59_000;
  assert.deepEqual(await b.gate('pacs'), { pass: false, retryAt: 1_000_000 + 60_000 });
  now += 1_000;
  assert.deepEqual(await b.gate('pacs'), { pass: true, probe: true }, 'cool-down over: one probe');
  assert.equal((await b.status('pacs'))?.breaker, 'half-open');
  const second = await b.gate('pacs');
  assert.equal(second.pass, false, 'only one probe at a time');

  // The probe fails: open again, for a fresh cool-down.
  assert.equal(await b.record('pacs', 'dicomweb', 'transient', 'still down'), 'open');
  status = await b.status('pacs');
  assert.equal(status?.openedAt, now);
  now += 60_000;
  assert.deepEqual(await b.gate('pacs'), { pass: true, probe: true });
  assert.equal(await b.record('pacs', 'dicomweb', 'success'), 'closed');
  status = await b.status('pacs');
  assert.equal(status?.consecutiveFailures, 0);
  assert.equal(status?.lastSuccessAt, now);
  assert.equal(status?.openedAt, undefined);
  assert.deepEqual(await b.gate('pacs'), { pass: true, probe: false });

  // A refusal (permanent) proves the destination is up: it resets the count.
  await b.record('pacs', 'dicomweb', 'transient');
  await b.record('pacs', 'dicomweb', 'transient');
  await b.record('pacs', 'dicomweb', 'permanent', 'HTTP 400');
  assert.equal(await b.record('pacs', 'dicomweb', 'transient'), 'closed');
  // Breakers are per destination.
  assert.equal((await b.status('other'))?.breaker, undefined);
});

test('an open breaker defers deliveries without spending their attempts; the destination is not hammered', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-breaker-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const store = new FilesystemObjectStore(dir);
  await store.init();
  const qPrefix = `${prefix}-q`;
  let calls = 0;
  const down: Destination = {
    name: 'down',
    kind: 'test',
    async deliver() {
      calls++;
      throw new TransientDeliveryError('connection refused', 'down');
    },
  };
  // Cool-down far beyond the test: once open, nothing may reach the destination.
  const breakers = new DestinationBreakers(connection, qPrefix, { threshold: 2, cooldownMs: 3_600_000 });
  const before =
    (await deliveries.get()).values.find(
      (v) => v.labels.destination === 'down' && v.labels.result === 'deferred',
    )?.value ?? 0;
  const { queue } = deliveryQueue(t, qPrefix, new Map([['down', down]]), breakers, store);
  const uids = [1, 2, 3, 4, 5].map((i) => `2.25.${i}`);
  for (const uid of uids) {
    await store.put(objectKey.outbox('2.25.99', uid), Buffer.alloc(200));
    await queue.add(
      'deliver',
      { studyUid: '2.25.99', sopInstanceUid: uid, destination: 'down' },
      { jobId: jobId.delivery(uid, 'down') },
    );
  }
  // Every job ends up waiting for the breaker, far in the future.
  await waitFor(
    'all five jobs deferred',
    async () => {
      const delayed = await queue.getDelayed();
      const farOff = delayed.filter((j) => j.delay > 60_000 || j.timestamp + j.delay > Date.now() + 60_000);
      return farOff.length === 5 ? true : undefined;
    },
    30_000,
  );
  assert.equal(calls, 2, 'the destination saw exactly the failures that opened the breaker');
  const status = await breakers.status('down');
  assert.equal(status?.breaker, 'open');
  assert.equal(status?.consecutiveFailures, 2);
  const jobs = await queue.getDelayed();
  const attempts = jobs.map((j) => j.attemptsMade).sort();
  assert.deepEqual(attempts, [0, 0, 0, 1, 1], 'deferral spends no attempt');
  assert.equal(await queue.getFailedCount(), 0);
  const after = (await deliveries.get()).values.find(
    (v) => v.labels.destination === 'down' && v.labels.result === 'deferred',
  )?.value;
  assert.ok((after ?? 0) - before >= 5, 'deferrals are counted in aigw_deliveries_total');
});

test('a permanent failure is not retried and does not trip the breaker', async (t) => {
  const qPrefix = `${prefix}-p`;
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-breaker-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const store = new FilesystemObjectStore(dir);
  await store.put(objectKey.outbox('2.25.9', '2.25.10'), Buffer.alloc(200));
  const refusing: Destination = {
    name: 'picky',
    kind: 'test',
    async deliver() {
      throw new PermanentDeliveryError('HTTP 400: bad object', 'picky', 400);
    },
  };
  const breakers = new DestinationBreakers(connection, qPrefix, { threshold: 1, cooldownMs: 3_600_000 });
  const { queue } = deliveryQueue(t, qPrefix, new Map([['picky', refusing]]), breakers, store);
  await queue.add('deliver', {
    studyUid: '2.25.9',
    sopInstanceUid: '2.25.10',
    destination: 'picky',
  });
  const [failed] = await waitFor('the job to fail', async () => {
    const f = await queue.getFailed();
    return f.length > 0 ? f : undefined;
  });
  assert.equal(failed!.attemptsMade, 1);
  assert.match(failed!.failedReason, /HTTP 400: bad object/);
  const status = await breakers.status('picky');
  assert.equal(status?.breaker, 'closed');
  assert.equal(status?.lastError, 'HTTP 400: bad object');
});

test('capped exponential backoff: the default 30 attempts span hours, not days; Retry-After is honoured', () => {
  const cfg = configSchema.parse({});
  const s = { baseMs: cfg.delivery.backoffMs, maxMs: cfg.delivery.maxBackoffMs };
  assert.equal(deliveryDelay(1, s), 5_000);
  assert.equal(deliveryDelay(2, s), 10_000);
  assert.equal(deliveryDelay(8, s), 640_000);
  assert.equal(deliveryDelay(9, s), 900_000, 'capped at maxBackoffMs');
  assert.equal(deliveryDelay(29, s), 900_000);
  const window = retryWindowMs(cfg.delivery.attempts, s);
  assert.ok(window >= 5 * 3_600_000 && window <= 8 * 3_600_000, `retry window ${window / 3_600_000} h`);
  // Uncapped, the same settings would wait 5 s * 2^28 ≈ 42 years before the last attempt.
  assert.equal(deliveryDelay(3, s, 120_000), 120_000, 'Retry-After beyond the curve wins');
  assert.equal(deliveryDelay(3, s, 1_000), 20_000, 'a shorter Retry-After does not speed up retries');
  const strategy = deliveryBackoffStrategy(s);
  assert.equal(strategy(3, DELIVERY_BACKOFF, new TransientDeliveryError('429', 'x', 429, 300_000)), 300_000);
  assert.equal(strategy(3, DELIVERY_BACKOFF, new Error('other')), 20_000);
});
