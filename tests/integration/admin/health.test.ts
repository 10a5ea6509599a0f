// /readyz checks each dependency for real and says why it fails: Redis (a live one and a closed port),
// the spool (a probe file written, fsynced, deleted), the free-disk watermark, and worker heartbeats.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { readiness, type ReadinessDeps } from '../../../src/admin/health.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { freePort } from '../../helpers/dicom-tools.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';

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

test('no worker, or only stale ones: not ready, saying which', async () => {
  await redis.del(keys.workers(prefix));
  let r = await readiness(deps());
  assert.equal(r.ready, false);
  assert.match(r.checks.workers!.reason, /has ever sent a heartbeat/);

  await beat('w-old', 120_000);
  r = await readiness(deps());
  assert.equal(r.ready, false);
  assert.match(r.checks.workers!.reason, /120 s old \(limit 30 s\)/);

  // Role 'all': the in-process worker counts while it runs, even before its first heartbeat.
  r = await readiness(deps({ localWorkerRunning: () => true }));
  assert.equal(r.checks.workers!.ok, true);
  assert.match(r.checks.workers!.reason, /in-process/);
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
