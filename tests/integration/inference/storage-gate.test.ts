// The storage gate with a real fault: a worker's data directory replaced by a file (a fault root feels too,
// unlike chmod) makes the write probe fail. While it fails the BullMQ workers take no new job (a job added
// meanwhile waits with no attempt used), a job already running finishes (not lost), and the status says
// why; with the directory back, the workers resume and the waiting job runs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { dataDirCheck, StorageGate } from '../../../src/inference/runtime/storage-gate.ts';
import { REDIS_URL, waitFor } from '../../helpers/gateway.ts';

/** Waits until `cond` holds (waitFor takes any defined value, false included). */
const until = (what: string, cond: () => Promise<boolean> | boolean, ms: number) =>
  waitFor(what, async () => ((await cond()) ? true : undefined), ms);

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
const prefix = `aigw-test-gate-${randomBytes(4).toString('hex')}`;
const dirs: string[] = [];
/** Connections handed to BullMQ workers, which leave passed-in connections open: closed in after(). */
const connections: Redis[] = [];
function connection(): Redis {
  const c = redis.duplicate();
  connections.push(c);
  return c;
}
after(async () => {
  for (const c of connections) c.disconnect();
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

test('dataDirCheck passes on a writable directory and fails where the directory is a file or gone', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'aigw-gate-'));
  dirs.push(root);
  const data = path.join(root, 'data');
  await mkdir(data);
  const check = dataDirCheck(data);
  await check();
  await rename(data, `${data}.away`);
  await assert.rejects(check(), /ENOENT/);
  await writeFile(data, 'not a directory');
  await assert.rejects(check(), /ENOTDIR/);
});

test('storage unreachable: no new job is taken (no attempt used), the running one finishes; back: it runs', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'aigw-gate-'));
  dirs.push(root);
  const data = path.join(root, 'data');
  await mkdir(data);
  const queueName = 'inference.gate-model@1';
  const queue = new Queue(queueName, { connection: redis, prefix });
  const ran: string[] = [];
  const changes: boolean[] = [];
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let started!: () => void;
  const firstStarted = new Promise<void>((resolve) => (started = resolve));
  const gate = new StorageGate({
    check: dataDirCheck(data),
    intervalMs: 100,
    onChange: (s) => changes.push(s.ok),
  });
  const worker = new Worker(
    queueName,
    // As the worker role runs a job: through the gate's guard.
    (job: Job, token?: string) =>
      gate.guard(job, token, async () => {
        ran.push(String(job.id));
        if (job.id === 'long') {
          started();
          await released;
        }
        return 'done';
      }),
    { connection: connection(), prefix, concurrency: 2, autorun: false },
  );
  worker.on('error', () => undefined);
  gate.attach(worker);
  try {
    // The first probe passes: the gate starts the worker.
    await gate.start();
    assert.deepEqual(gate.status, { ok: true, reason: 'storage reachable' });
    await queue.add('x', {}, { jobId: 'long', attempts: 3 });
    await firstStarted;

    // The fault: the data directory replaced by a file.
    await rename(data, `${data}.away`);
    await writeFile(data, 'not a directory');
    await until('the gate to see the fault', async () => !gate.status.ok, 5000);
    assert.match(gate.status.reason, /^storage unreachable: .*ENOTDIR/);
    await until('the worker to pause', async () => worker.isPaused(), 5000);

    // A job added now is not taken while the storage fails; it keeps all its attempts.
    await queue.add('x', {}, { jobId: 'later', attempts: 3 });
    // The running job finishes meanwhile: not lost.
    release();
    await until(
      'the running job to complete',
      async () => (await queue.getJobState('long')) === 'completed',
      5000,
    );
    await sleep(1500);
    assert.deepEqual(ran, ['long'], 'nothing new taken while the storage fails');
    // Waiting, or delayed by the guard where a fetch already under way took it: never run, no attempt used.
    const waiting = (await queue.getJob('later'))!;
    assert.match(await waiting.getState(), /^(waiting|delayed)$/);
    assert.equal(waiting.attemptsMade, 0);

    // The directory back: the gate resumes the worker, which takes the waiting job.
    await rm(data);
    await rename(`${data}.away`, data);
    await until(
      'the job to complete',
      async () => (await queue.getJobState('later')) === 'completed',
      10_000,
    );
    assert.ok(gate.status.ok);
    assert.deepEqual(changes, [false, true]);
    const done = (await queue.getJob('later'))!;
    assert.equal(done.attemptsMade, 1, 'one attempt: the one that ran');
    assert.deepEqual(ran, ['long', 'later']);
  } finally {
    gate.stop();
    await worker.close(true);
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
  }
});

test('a worker whose storage fails at start is not started until the storage answers', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'aigw-gate-'));
  dirs.push(root);
  const data = path.join(root, 'data');
  await writeFile(data, 'not a directory');
  const queueName = 'inference.gate-start@1';
  const queue = new Queue(queueName, { connection: redis, prefix });
  const worker = new Worker(queueName, async () => 'done', {
    connection: connection(),
    prefix,
    autorun: false,
  });
  worker.on('error', () => undefined);
  const gate = new StorageGate({ check: dataDirCheck(data), intervalMs: 100 });
  gate.attach(worker);
  try {
    await gate.start();
    assert.equal(gate.status.ok, false);
    await queue.add('x', {}, { jobId: 'j' });
    await sleep(800);
    assert.equal(await queue.getJobState('j'), 'waiting');
    assert.equal(worker.isRunning(), false);
    await rm(data);
    await mkdir(data);
    await until('the job to complete', async () => (await queue.getJobState('j')) === 'completed', 10_000);
  } finally {
    gate.stop();
    await worker.close(true);
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
  }
});

test('a check that hangs counts as failed after its timeout', async () => {
  const gate = new StorageGate({ check: () => new Promise<void>(() => undefined), timeoutMs: 200 });
  await gate.start();
  gate.stop();
  assert.equal(gate.status.ok, false);
  assert.match(gate.status.reason, /storage check: no result within 200 ms/);
});
