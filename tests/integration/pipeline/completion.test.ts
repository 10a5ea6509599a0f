import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { CompletionArmer, rearmStudyComplete } from '../../../src/pipeline/completion.ts';
import type { StudyCompleteJob } from '../../../src/pipeline/jobs.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `aigw-test-${randomBytes(4).toString('hex')}`;
const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
const queue = new Queue<StudyCompleteJob>('study-complete', { connection, prefix });

after(async () => {
  await queue.obliterate({ force: true });
  await queue.close();
  const keys = await connection.keys(`${prefix}:*`);
  if (keys.length) await connection.del(...keys);
  connection.disconnect();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('each new instance pushes completion out; one job runs once the study is quiet', async () => {
  const completions: { uid: string; at: number }[] = [];
  const worker = new Worker<StudyCompleteJob>(
    'study-complete',
    async (job) => {
      completions.push({ uid: job.data.studyUid, at: Date.now() });
    },
    { connection, prefix },
  );
  const events = new QueueEvents('study-complete', { connection, prefix });
  await events.waitUntilReady();
  try {
    const quiet = 600;
    let lastTouch = 0;
    // Ten instances 200 ms apart: every gap is shorter than the quiet period.
    for (let i = 0; i < 10; i++) {
      await rearmStudyComplete(queue, '1.2.3.4', quiet);
      lastTouch = Date.now();
      await sleep(200);
    }
    await rearmStudyComplete(queue, '1.2.3.5', quiet);
    const deadline = Date.now() + 10_000;
    while (completions.length < 2 && Date.now() < deadline) await sleep(50);
    await sleep(quiet + 300);
    assert.equal(
      completions.filter((c) => c.uid === '1.2.3.4').length,
      1,
      'exactly one completion for the debounced study',
    );
    assert.equal(completions.filter((c) => c.uid === '1.2.3.5').length, 1);
    const done = completions.find((c) => c.uid === '1.2.3.4')!;
    assert.ok(
      done.at >= lastTouch + quiet - 50,
      `completed ${done.at - lastTouch} ms after the last instance`,
    );

    // A late instance after completion re-opens the study: a second completion follows.
    await rearmStudyComplete(queue, '1.2.3.4', quiet);
    const deadline2 = Date.now() + 10_000;
    while (completions.filter((c) => c.uid === '1.2.3.4').length < 2 && Date.now() < deadline2)
      await sleep(50);
    assert.equal(completions.filter((c) => c.uid === '1.2.3.4').length, 2);
  } finally {
    await worker.close();
    await events.close();
  }
});

test('the armer re-arms a burst a few times, not per instance, and completion still waits for the LAST instance', async () => {
  const completions: { uid: string; at: number }[] = [];
  const worker = new Worker<StudyCompleteJob>(
    'study-complete',
    async (job) => {
      completions.push({ uid: job.data.studyUid, at: Date.now() });
    },
    { connection, prefix },
  );
  let adds = 0;
  const counting = new Proxy(queue, {
    get(target, prop, receiver) {
      if (prop === 'add') {
        return (...args: Parameters<typeof queue.add>) => {
          adds++;
          return target.add(...args);
        };
      }
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
  try {
    const quiet = 500;
    const slack = 150;
    const armer = new CompletionArmer(counting, quiet, slack);
    const uid = '1.2.3.6';
    let lastAck = 0;
    // 40 instances 20 ms apart (0.8 s), four of them at once each time, as from four associations.
    for (let i = 0; i < 40; i++) {
      await Promise.all([0, 1, 2, 3].map(() => armer.instanceStored(uid)));
      lastAck = Date.now();
      await sleep(20);
    }
    assert.ok(adds >= 3 && adds <= 12, `${adds} re-arms for 160 instances over ~0.8 s`);
    // The hard case: the last instance comes well after a re-arm, inside its window, so it is not re-armed.
    await sleep(slack + 10);
    const before = adds;
    await armer.instanceStored(uid);
    assert.equal(adds, before + 1, 'the window had passed: re-armed');
    await sleep(slack * 0.7);
    await armer.instanceStored(uid);
    lastAck = Date.now();
    assert.equal(adds, before + 1, 'inside the window: covered by the previous re-arm');
    const deadline = Date.now() + 10_000;
    while (completions.length < 1 && Date.now() < deadline) await sleep(20);
    await sleep(quiet);
    const mine = completions.filter((c) => c.uid === uid);
    assert.equal(mine.length, 1, 'one completion for the burst');
    const after = mine[0]!.at - lastAck;
    assert.ok(after >= quiet - 20, `completed ${after} ms after the last instance (quiet ${quiet})`);
    assert.ok(after <= quiet + slack + 1000, `completed ${after} ms after the last instance`);
  } finally {
    await worker.close();
  }
});

test('a failed re-arm fails every instance that relied on it, and the next instance tries again', async () => {
  // The refusal itself is stood in for here (a real Redis outage through the whole gateway is
  // tests/e2e/redis-outage.test.ts); what is checked is the armer's bookkeeping around it.
  let calls = 0;
  const failing = {
    add: async () => {
      calls++;
      await sleep(20);
      throw new Error('Redis is down');
    },
  } as unknown as Queue<StudyCompleteJob>;
  const armer = new CompletionArmer(failing, 10_000, 250);
  const results = await Promise.allSettled([
    armer.instanceStored('1.2.3.7'),
    armer.instanceStored('1.2.3.7'),
  ]);
  assert.deepEqual(
    results.map((r) => r.status),
    ['rejected', 'rejected'],
  );
  assert.equal(calls, 1, "the second instance shared the first one's re-arm");
  // Not remembered as armed: the next instance re-arms (and fails again) instead of being acknowledged.
  await assert.rejects(armer.instanceStored('1.2.3.7'));
  assert.equal(calls, 2);
});
