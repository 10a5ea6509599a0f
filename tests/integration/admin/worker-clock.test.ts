// Worker liveness is judged on one clock, Redis's: heartbeats are stamped with Redis TIME, dead workers are
// pruned by Redis TIME, and the readers (readiness, the workers API) judge staleness by Redis TIME. A host
// clock cannot be changed in a test, so a process's view of it is: Date.now is skewed while a worker beats
// (its host is off) or while a reader reads (the gateway's host is off). Real Redis, real publisher.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, afterEach, before, mock, test } from 'node:test';
import { Redis } from 'ioredis';
import { readiness } from '../../../src/admin/health.ts';
import { listWorkers } from '../../../src/admin/queries.ts';
import { WorkerHeartbeatPublisher } from '../../../src/inference/runtime/heartbeat.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';

const prefix = `aigw-clock-${randomBytes(4).toString('hex')}`;
const HOUR = 3_600_000;
const STALE_MS = 30_000;
let redis: Redis;
let spoolDir: string;
const publishers: WorkerHeartbeatPublisher[] = [];
const realNow = Date.now.bind(Date);

/** Runs fn while this process's clock reads `skewMs` off. */
async function withClockOff<T>(skewMs: number, fn: () => Promise<T>): Promise<T> {
  const skewed = mock.method(Date, 'now', () => realNow() + skewMs);
  try {
    return await fn();
  } finally {
    skewed.mock.restore();
  }
}

/** A worker on a host whose clock is `skewMs` off: it is created and sends its first beat on that clock. */
async function workerOnHost(workerId: string, skewMs: number, deadWorkerRetentionMs = HOUR) {
  return withClockOff(skewMs, async () => {
    const p = new WorkerHeartbeatPublisher({
      redis,
      prefix,
      concurrency: 1,
      providers: { m: 'cpu' },
      gpu: '',
      workerId,
      intervalMs: HOUR, // one beat, from start(); the test drives the rest
      deadWorkerRetentionMs,
    });
    publishers.push(p);
    await p.start();
    return p;
  });
}

async function redisNowMs(): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

async function alive(): Promise<Record<string, boolean>> {
  return Object.fromEntries((await listWorkers(redis, prefix, STALE_MS)).map((w) => [w.workerId, w.alive]));
}

function deps() {
  return { redis, prefix, spoolDir, minFreeBytes: 1024, workerStaleMs: STALE_MS };
}

before(async () => {
  redis = new Redis(REDIS_URL);
  spoolDir = await mkdtemp(path.join(tmpdir(), 'aigw-clock-'));
});

afterEach(async () => {
  for (const p of publishers.splice(0)) await p.stop();
  await redis.del(keys.workers(prefix));
});

after(async () => {
  redis.disconnect();
  await rm(spoolDir, { recursive: true, force: true });
});

test('a worker whose host clock is an hour behind is alive for readiness and the workers API', async () => {
  await workerOnHost('slow-clock', -HOUR);
  assert.deepEqual(await alive(), { 'slow-clock': true });
  const r = await readiness(deps());
  assert.equal(r.checks.workers!.ok, true, r.checks.workers!.reason);
  assert.match(r.checks.workers!.reason, /slow-clock/);
  const [view] = await listWorkers(redis, prefix, STALE_MS);
  const now = await redisNowMs();
  assert.ok(Math.abs(now - view!.lastHeartbeat) < 5000, 'stamped with Redis time, not the host clock');
  assert.ok(view!.startedAt <= view!.lastHeartbeat && now - view!.startedAt < 5000);
});

test('a reader on a host whose clock is an hour ahead still sees a live worker alive', async () => {
  await workerOnHost('w1', 0);
  const [workers, r] = await withClockOff(HOUR, async () => [await alive(), await readiness(deps())]);
  assert.deepEqual(workers, { w1: true });
  assert.equal(r.checks.workers!.ok, true, r.checks.workers!.reason);
});

test('a worker whose clock is ahead does not prune live workers', async () => {
  await workerOnHost('live', 0);
  // Dead workers are kept 30 min; by this host's clock the live worker's beat is an hour old.
  await workerOnHost('fast-clock', HOUR, 30 * 60_000);
  assert.deepEqual(await alive(), { 'fast-clock': true, live: true });
});

test('a dead worker is pruned by Redis time, even by a worker whose clock is behind', async () => {
  const now = await redisNowMs();
  await redis.hset(
    keys.workers(prefix),
    'dead',
    JSON.stringify({
      workerId: 'dead',
      host: 'gone',
      pid: 1,
      startedAt: now - 3 * HOUR,
      lastHeartbeat: now - 2 * HOUR,
    }),
  );
  assert.deepEqual(await alive(), { dead: false }, 'listed as dead before it is pruned');
  // Retention one hour: the entry is two hours old in Redis time, one hour in the future by this host's clock.
  await workerOnHost('slow-clock', -3 * HOUR, HOUR);
  assert.deepEqual(await alive(), { 'slow-clock': true });
});
