// A job whose processor holds the event loop longer than its BullMQ lock (a long session.run, a big
// decode) runs once: the lock is renewed from a thread of its own, so a second worker process checking
// for stalled jobs never takes it over. Without the renewer the second worker runs the job again.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { Queue, QueueEvents, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { LockRenewer } from '../../../src/inference/runtime/lock-renewer.ts';
import { REDIS_URL, REPO } from '../../helpers/gateway.ts';

const LOCK_MS = 1_000;
const BLOCK_MS = 3_500;
const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
const prefixes: string[] = [];
after(async () => {
  for (const prefix of prefixes) {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
  }
  redis.disconnect();
});

/** Holds this thread, as a native session.run does: no timer of this event loop fires meanwhile. */
function blockEventLoop(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // busy: nothing else on this event loop runs
  }
}

/** A second worker process on the same queue, checking for stalled jobs often; it counts what it runs. */
function startOtherWorker(prefix: string, queueName: string) {
  const script = `
    import { Worker } from 'bullmq';
    import { Redis } from 'ioredis';
    const connection = new Redis(${JSON.stringify(REDIS_URL)}, { maxRetriesPerRequest: null });
    const worker = new Worker(${JSON.stringify(queueName)}, async () => {
      await connection.incr(${JSON.stringify(`${prefix}:ran-elsewhere`)});
    }, { connection, prefix: ${JSON.stringify(prefix)}, lockDuration: ${LOCK_MS}, stalledInterval: 250 });
    process.on('SIGTERM', () => void worker.close(true).then(() => process.exit(0)));
    console.log('ready');
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ready = new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  return { child, ready };
}

async function runLongJob(withRenewer: boolean): Promise<{ ranHere: number; ranElsewhere: number }> {
  const prefix = `aigw-test-lock-${randomBytes(4).toString('hex')}`;
  prefixes.push(prefix);
  const queueName = 'inference.test-model@1.0.0';
  const queue = new Queue(queueName, { connection: redis, prefix });
  const events = new QueueEvents(queueName, { connection: { url: REDIS_URL }, prefix });
  const renewer = withRenewer
    ? new LockRenewer({ redisTarget: { url: REDIS_URL }, prefix, lockDurationMs: LOCK_MS })
    : undefined;
  let ranHere = 0;
  let started!: () => void;
  const startedRunning = new Promise<void>((resolve) => (started = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const processor = async (_job: Job, _token?: string) => {
    ranHere++;
    started();
    // Wait until the other worker process is up, then hold the event loop as a long run would.
    await released;
    blockEventLoop(BLOCK_MS);
  };
  const worker = new Worker(
    queueName,
    (job, token) =>
      renewer ? renewer.hold(queueName, job.id, token, () => processor(job, token)) : processor(job),
    // Both workers share the stalled-check settings, as the worker role's processes do.
    { connection: redis, prefix, lockDuration: LOCK_MS, stalledInterval: 250, autorun: false },
  );
  worker.on('error', () => undefined);
  const job = await queue.add('infer', {});
  const finished = job.waitUntilFinished(events, 30_000).catch(() => undefined);
  // This worker takes the job; the other process starts watching while it runs.
  void worker.run();
  await startedRunning;
  const other = startOtherWorker(prefix, queueName);
  try {
    await other.ready;
    release();
    await finished;
    // Give the other worker's stalled check time to act on what it saw.
    await new Promise((r) => setTimeout(r, 1_500));
    return { ranHere, ranElsewhere: Number((await redis.get(`${prefix}:ran-elsewhere`)) ?? 0) };
  } finally {
    other.child.kill('SIGTERM');
    await worker.close(true);
    await renewer?.close();
    await events.close();
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
  }
}

test('a job holding the event loop past its lock runs once when its lock is renewed off the main thread', async () => {
  const renewed = await runLongJob(true);
  assert.deepEqual(renewed, { ranHere: 1, ranElsewhere: 0 });
});

test('control: without the renewer, another worker takes the blocked job over and runs it again', async () => {
  const unprotected = await runLongJob(false);
  assert.equal(unprotected.ranHere, 1);
  assert.equal(unprotected.ranElsewhere, 1, 'the fault this guards against is real');
});
