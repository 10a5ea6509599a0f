// Study progress is counted per run: jobs of an earlier run that finish late (a reprocess, or a late
// instance that re-opened the study) cannot mark the current run done.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { keys } from '../../../src/pipeline/keys.ts';
import { CHANGED_KEEP_MS, StudyIndex } from '../../../src/pipeline/study-index.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `aigw-test-index-${randomBytes(4).toString('hex')}`;
const redis = new Redis(REDIS_URL);
after(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

async function seed(index: StudyIndex, studyUid: string): Promise<void> {
  await index.recordInstance({
    studyUid,
    seriesUid: `${studyUid}.1`,
    sopInstanceUid: `${studyUid}.1.1`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.1',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    size: 1,
    callingAe: 'MOD',
    callingAddress: '127.0.0.1',
    receivedAt: Date.now(),
  });
}

test('a reprocess during a run: the earlier run finishing does not mark the new run done', async () => {
  const index = new StudyIndex(redis, prefix);
  const uid = '2.25.7001';
  await seed(index, uid);
  await index.startRun(uid, 1, 2);
  await index.inferenceDone(uid, 1, 1, 'infer-a-1');
  // An admin reprocesses: run 2 starts with one inference job while run 1 still has work in flight.
  await index.startRun(uid, 2, 1);
  await index.inferenceDone(uid, 1, 1, 'infer-b-1');
  await index.deliveryDone(uid, 1, 'deliver-a-1');
  await index.deliveryDone(uid, 1, 'deliver-b-1');
  assert.equal((await index.get(uid))?.state, 'queued', 'run 1 finishing leaves run 2 queued');
  await index.inferenceDone(uid, 2, 1, 'infer-a-2');
  assert.equal((await index.get(uid))?.state, 'delivering');
  await index.deliveryDone(uid, 2, 'deliver-a-2');
  assert.equal((await index.get(uid))?.state, 'done');
  assert.equal(await index.currentRun(uid), 2);
});

test('a late instance re-opens the study: the old run settling does not mark it done', async () => {
  const index = new StudyIndex(redis, prefix);
  const uid = '2.25.7002';
  await seed(index, uid);
  await index.startRun(uid, 1, 1);
  await index.inferenceDone(uid, 1, 1, 'infer-1');
  await seed(index, uid); // a late instance: the study is receiving again
  await index.deliveryDone(uid, 1, 'deliver-1');
  assert.equal((await index.get(uid))?.state, 'receiving');
  // A retried job of the same run settles once.
  await index.startRun(uid, 2, 1);
  await index.inferenceDone(uid, 2, 1, 'infer-2');
  await index.inferenceDone(uid, 2, 1, 'infer-2');
  await index.deliveryDone(uid, 2, 'deliver-2');
  assert.equal((await index.get(uid))?.state, 'done');
});

test('the changed-studies set is trimmed by Redis time, so it stays bounded without a console reading it', async () => {
  const trimPrefix = `${prefix}-trim`;
  const index = new StudyIndex(redis, trimPrefix);
  const [seconds] = await redis.time();
  const nowMs = Number(seconds) * 1000;
  const key = keys.studiesChanged(trimPrefix);
  await redis.zadd(key, String(nowMs - 2 * CHANGED_KEEP_MS), '2.25.old1');
  await redis.zadd(key, String(nowMs - CHANGED_KEEP_MS - 1000), '2.25.old2');
  await redis.zadd(key, String(nowMs), '2.25.fresh');
  assert.equal(await index.trimChanged(), 2);
  assert.deepEqual(await redis.zrange(key, '0', '-1'), ['2.25.fresh']);
});
