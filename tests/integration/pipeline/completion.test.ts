import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { rearmStudyComplete } from '../../../src/pipeline/completion.ts';
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
