// A job that fails for good marks its study failed, unless it belongs to an earlier run: a reprocess or a
// late instance started a new run meanwhile, and that run's state is its own.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { markStudiesFailedOnFinalFailure } from '../../../src/pipeline/failed-jobs.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { REDIS_URL, waitFor } from '../../helpers/gateway.ts';

const prefix = `aigw-test-failed-${randomBytes(4).toString('hex')}`;
const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
after(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

test('a final failure of an earlier run leaves the current run alone; one of the current run fails the study', async (t) => {
  const index = new StudyIndex(redis, prefix);
  const uid = '2.25.8001';
  await index.recordInstance({
    studyUid: uid,
    seriesUid: `${uid}.1`,
    sopInstanceUid: `${uid}.1.1`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.1',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    size: 1,
    callingAe: 'MOD',
    callingAddress: '127.0.0.1',
    receivedAt: Date.now(),
  });
  await index.startRun(uid, 2, 1);
  const queue = new Queue('inference', { connection: redis, prefix });
  const worker = new Worker(
    'inference',
    async (): Promise<void> => {
      throw new UnrecoverableError('model refused the images');
    },
    { connection: redis, prefix },
  );
  markStudiesFailedOnFinalFailure(worker, index, 'inference');
  t.after(async () => {
    await worker.close(true);
    await queue.obliterate({ force: true });
    await queue.close();
  });

  const stale = await queue.add('infer', { studyUid: uid, run: 1 });
  await waitFor('the stale job to fail', async () => ((await stale.isFailed()) ? true : undefined));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal((await index.get(uid))?.state, 'queued', 'run 1 failing does not fail run 2');

  await queue.add('infer', { studyUid: uid, run: 2 });
  await waitFor('the study to fail', async () =>
    (await index.get(uid))?.state === 'failed' ? true : undefined,
  );
  assert.match((await index.get(uid))?.detail ?? '', /inference: model refused the images/);
});
