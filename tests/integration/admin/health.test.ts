// /readyz checks each dependency for real and says why it fails: Redis (a live one and a closed port),
// the spool (a probe file written, fsynced, deleted), the free-disk watermark. Worker heartbeats are
// reported, but a gateway's readiness means it can ingest: no live worker is a warning, not a failure.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { createAdminApp, listen } from '../../../src/admin/app.ts';
import { readiness, type ReadinessDeps } from '../../../src/admin/health.ts';
import { configSchema } from '../../../src/config/schema.ts';
import { createQueues } from '../../../src/pipeline/queues.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { freePort } from '../../helpers/dicom-tools.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';

const prefix = `aigw-health-${randomBytes(4).toString('hex')}`;
let redis: Redis;
let spoolDir: string;

function deps(extra: Partial<ReadinessDeps> = {}): ReadinessDeps {
  return { redis, prefix, spoolDir, minFreeBytes: 1024, workerStaleMs: 30_000, ...extra };
}

async function beat(workerId: string, ageMs: number): Promise<void> {
  const now = Date.now();
  await redis.hset(
    keys.workers(prefix),
    workerId,
    JSON.stringify({ workerId, host: 'h', pid: 1, startedAt: now - ageMs, lastHeartbeat: now - ageMs }),
  );
}

before(async () => {
  redis = new Redis(REDIS_URL);
  spoolDir = await mkdtemp(path.join(tmpdir(), 'aigw-health-'));
});

after(async () => {
  await redis.del(keys.workers(prefix));
  redis.disconnect();
  await rm(spoolDir, { recursive: true, force: true });
});

test('ready when Redis answers, the spool takes a probe file, disk is free and a worker beats', async () => {
  await beat('w1', 1000);
  const r = await readiness(deps());
  assert.equal(r.ready, true, JSON.stringify(r.checks));
  assert.match(r.checks.redis!.reason, /PONG/);
  assert.match(r.checks.spool!.reason, /fsynced and deleted/);
  assert.match(r.checks.workers!.reason, /w1/);
  assert.deepEqual(await readdir(spoolDir), [], 'the probe file is deleted');
});

test('a gateway with no worker alive is still ready to ingest, and says so as a warning', async () => {
  await redis.del(keys.workers(prefix));
  let r = await readiness(deps());
  assert.equal(r.ready, true, JSON.stringify(r.checks));
  assert.equal(r.checks.workers!.ok, false);
  assert.match(r.checks.workers!.reason, /has ever sent a heartbeat/);
  assert.deepEqual(r.warnings, [`workers: ${r.checks.workers!.reason}`]);

  await beat('w-old', 120_000);
  r = await readiness(deps());
  assert.equal(r.ready, true);
  assert.match(r.checks.workers!.reason, /120 s old \(limit 30 s\)/);
  assert.match(r.warnings[0]!, /no inference worker alive/);

  // Role 'all': the in-process worker is part of this process, so its readiness counts.
  r = await readiness(deps({ localWorkerRunning: () => true }));
  assert.equal(r.ready, true);
  assert.match(r.checks.workers!.reason, /in-process/);
  assert.deepEqual(r.warnings, []);
  r = await readiness(deps({ localWorkerRunning: () => false }));
  assert.equal(r.ready, false);
  assert.equal(r.checks.workers!.ok, false);
});

test('GET /readyz of a gateway: 200 with no worker alive, the worker named under warnings', async () => {
  await redis.del(keys.workers(prefix));
  const config = configSchema.parse({
    redis: { url: REDIS_URL, prefix, autoStart: false },
    dataDir: spoolDir,
    spool: { minFreeBytes: 1024 },
  });
  const queues = createQueues(redis, config);
  const store = new FilesystemObjectStore(spoolDir);
  await store.init();
  const server = await listen(
    createAdminApp({
      config,
      redis,
      index: new StudyIndex(redis, prefix),
      queues,
      spoolDir,
      store,
      destinations: [],
      warnings: ['dimse: promiscuous'],
    }),
    '127.0.0.1',
    0,
  );
  try {
    const res = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/readyz`);
    const body = (await res.json()) as {
      status: string;
      checks: Record<string, { ok: boolean }>;
      warnings: string[];
    };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.status, 'ready');
    assert.equal(body.checks.storage!.ok, true, 'the object store answers');
    assert.equal(body.checks.workers!.ok, false);
    assert.deepEqual(body.warnings, [
      'dimse: promiscuous',
      'workers: no inference worker has ever sent a heartbeat',
    ]);
  } finally {
    await new Promise((r) => server.close(r));
    await queues.close();
  }
});

test('a missing spool and a disk below the watermark are named', async () => {
  await beat('w1', 0);
  const r = await readiness(deps({ spoolDir: path.join(spoolDir, 'gone'), minFreeBytes: 1024 }));
  assert.equal(r.ready, false);
  assert.equal(r.checks.spool!.ok, false);
  assert.match(r.checks.spool!.reason, /not writable: ENOENT/);

  const full = await readiness(deps({ minFreeBytes: Number.MAX_SAFE_INTEGER }));
  assert.equal(full.ready, false);
  assert.equal(full.checks.spool!.ok, true);
  assert.match(full.checks.disk!.reason, /below the watermark/);

  // An object store that does not answer makes the gateway unready, with the store's reason.
  const gone = new FilesystemObjectStore(path.join(spoolDir, 'no-such-store'));
  const unanswered = await readiness(deps({ store: gone }));
  assert.equal(unanswered.ready, false);
  assert.equal(unanswered.checks.storage!.ok, false);
  assert.match(unanswered.checks.storage!.reason, /filesystem store at .*no-such-store: ENOENT/);
});

test('Redis that does not answer: not ready, with the error', async () => {
  const dead = new Redis({
    port: await freePort(),
    host: '127.0.0.1',
    maxRetriesPerRequest: 0,
    lazyConnect: true,
  });
  dead.on('error', () => undefined);
  const r = await readiness(deps({ redis: dead }));
  dead.disconnect();
  assert.equal(r.ready, false);
  assert.equal(r.checks.redis!.ok, false);
  assert.match(r.checks.redis!.reason, /Redis does not answer/);
  assert.match(r.checks.workers!.reason, /Redis does not answer/);
});
