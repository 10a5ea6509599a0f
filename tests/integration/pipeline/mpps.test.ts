// The MPPS store and the study index against a real Redis: which write completes a study (the N-SET or the
// last announced instance, whichever comes second), what a step naming several studies does, what the
// timer records, and that forgetting a study forgets its evidence.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { StudyCompleteJob } from '../../../src/pipeline/jobs.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { CompletionArmer } from '../../../src/pipeline/completion.ts';
import { MppsStore } from '../../../src/pipeline/mpps.ts';
import { StudyIndex, type InstanceRecord } from '../../../src/pipeline/study-index.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `aigw-test-${randomBytes(4).toString('hex')}`;
const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
const queue = new Queue<StudyCompleteJob>('study-complete', { connection: redis, prefix });
const index = new StudyIndex(redis, prefix);
const store = new MppsStore(redis, prefix, new CompletionArmer(queue, 600_000));

after(async () => {
  await queue.obliterate({ force: true });
  await queue.close();
  const found = await redis.keys(`${prefix}:*`);
  if (found.length) await redis.del(...found);
  redis.disconnect();
});

let n = 0;
const uid = () => `1.2.826.0.1.3680043.99.5.${++n}`;

function instance(studyUid: string, sopInstanceUid: string): InstanceRecord {
  return {
    studyUid,
    seriesUid: `${studyUid}.1`,
    sopInstanceUid,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    size: 1,
    callingAe: 'MODALITY1',
    callingAddress: '127.0.0.1',
    receivedAt: Date.now(),
  };
}

/** The study-complete job's delay now (undefined when there is none). */
async function pendingDelay(studyUid: string): Promise<number | undefined> {
  const jobs = await queue.getJobs(['delayed', 'waiting', 'prioritized']);
  const job = jobs.find((j) => j?.data.studyUid === studyUid);
  return job === undefined ? undefined : (job.opts.delay ?? 0);
}

test('the last announced instance completes the study; not before, and not while a step is open', async () => {
  const study = uid();
  const [a, b] = [uid(), uid()];
  const step = uid();
  const other = uid();
  assert.deepEqual(
    await store.create(step, { studies: [study], state: 'IN PROGRESS', series: [], callingAe: 'M' }),
    {
      ok: true,
    },
  );
  assert.deepEqual(
    await store.create(other, { studies: [study], state: 'IN PROGRESS', series: [], callingAe: 'M' }),
    {
      ok: true,
    },
  );
  assert.equal((await index.recordInstance(instance(study, a))).evidenceComplete, false);
  const set = await store.set(step, {
    state: 'COMPLETED',
    series: [{ seriesUid: `${study}.1`, instances: [a, b] }],
  });
  assert.deepEqual(set, { ok: true, state: 'COMPLETED', completedStudies: [] }, 'b is still awaited');
  // b arrives, but the other step is still in progress: the study is not whole yet.
  assert.equal((await index.recordInstance(instance(study, b))).evidenceComplete, false);
  assert.equal(await redis.scard(keys.studyAwaiting(prefix, study)), 0);
  const ended = await store.set(other, { state: 'COMPLETED' });
  assert.deepEqual(ended, { ok: true, state: 'COMPLETED', completedStudies: [study] });
  assert.equal(await pendingDelay(study), 0, 'the study-complete job runs now');
  const completion = await index.noteCompletion(study, 1);
  assert.deepEqual(completion, { run: 1, by: 'mpps', incomplete: false, missing: 0, openSteps: 0 });

  // A repeated instance later is not evidence again.
  assert.equal((await index.recordInstance(instance(study, b))).evidenceComplete, false);
});

test('N-SET first, instances after: exactly the last awaited instance reports the study whole', async () => {
  const study = uid();
  const sops = [uid(), uid(), uid()];
  const step = uid();
  await store.create(step, { studies: [study], state: 'IN PROGRESS', series: [], callingAe: 'M' });
  const set = await store.set(step, {
    state: 'COMPLETED',
    series: [{ seriesUid: `${study}.1`, instances: sops }],
  });
  assert.deepEqual(set, { ok: true, state: 'COMPLETED', completedStudies: [] }, 'nothing arrived yet');
  const results = await Promise.all(sops.map((s) => index.recordInstance(instance(study, s))));
  assert.equal(results.filter((r) => r.evidenceComplete).length, 1);
});

test('the timer records an incomplete study with its missing count; a step naming two studies completes neither', async () => {
  const study = uid();
  const step = uid();
  await store.create(step, { studies: [study], state: 'IN PROGRESS', series: [], callingAe: 'M' });
  await index.recordInstance(instance(study, uid()));
  await store.set(step, {
    state: 'COMPLETED',
    series: [{ seriesUid: `${study}.1`, instances: [uid(), uid()] }],
  });
  assert.deepEqual(await index.noteCompletion(study, 1), {
    run: 1,
    by: 'quiet-period',
    incomplete: true,
    missing: 2,
    openSteps: 0,
  });
  assert.equal((await index.get(study))?.completion?.missing, 2);

  const [s1, s2] = [uid(), uid()];
  const both = uid();
  await store.create(both, { studies: [s1, s2], state: 'IN PROGRESS', series: [], callingAe: 'M' });
  await index.recordInstance(instance(s1, uid()));
  assert.deepEqual(await store.set(both, { state: 'COMPLETED' }), {
    ok: true,
    state: 'COMPLETED',
    completedStudies: [],
  });
  assert.equal((await store.get(both))?.state, 'COMPLETED');
  const none = uid();
  assert.deepEqual(await index.noteCompletion(none, 1), {
    run: 1,
    by: 'quiet-period',
    incomplete: false,
    missing: 0,
    openSteps: 0,
  });
});

test('state machine: duplicate create, unknown step, no update after the end', async () => {
  const step = uid();
  const study = uid();
  const create = { studies: [study], state: 'IN PROGRESS' as const, series: [], callingAe: 'M' };
  assert.deepEqual(await store.create(step, create), { ok: true });
  assert.deepEqual(await store.create(step, create), { ok: false, why: 'duplicate' });
  assert.deepEqual(await store.set(uid(), { state: 'COMPLETED' }), { ok: false, why: 'no-such-instance' });
  assert.equal((await store.set(step, {})).ok, true, 'an N-SET without status keeps it in progress');
  assert.equal((await store.set(step, { state: 'DISCONTINUED', reason: 'patient left' })).ok, true);
  assert.deepEqual(await store.set(step, { state: 'COMPLETED' }), { ok: false, why: 'final' });
  assert.equal((await store.get(step))?.reason, 'patient left');
});

test('forgetting a study forgets its MPPS evidence', async () => {
  const study = uid();
  const step = uid();
  const rec = instance(study, uid());
  await store.create(step, { studies: [study], state: 'IN PROGRESS', series: [], callingAe: 'M' });
  await index.recordInstance(rec);
  await store.set(step, { state: 'COMPLETED', series: [{ seriesUid: `${study}.1`, instances: [uid()] }] });
  assert.equal(await redis.exists(keys.studyMpps(prefix, study), keys.studyAwaiting(prefix, study)), 2);
  assert.equal(await index.forgetStudy(study, rec.receivedAt), true);
  assert.equal(await redis.exists(keys.studyMpps(prefix, study), keys.studyAwaiting(prefix, study)), 0);
});
