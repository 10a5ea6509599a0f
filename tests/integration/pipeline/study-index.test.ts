// Study progress is counted per run: jobs of an earlier run that finish late (a reprocess, or a late
// instance that re-opened the study) cannot mark the current run done.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { setTimeout as setTimeoutPromise } from 'node:timers/promises';
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

/**
 * A loopback proxy to Redis that holds every reply for `delayMs`: a client on it is a slow process whose
 * steps lag behind what Redis has already done.
 */
async function slowRepliesProxy(delayMs: number): Promise<{ url: string; close(): Promise<void> }> {
  const target = new URL(REDIS_URL);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port || 6379), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined).on('close', () => sockets.delete(s));
    }
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => setTimeout(() => client.write(chunk), delayMs));
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

test('an inference job and the delivery it queued reporting at once leave the study done', async () => {
  // As in production, the inference worker and the delivery processor report from their own processes. Here
  // the inference side's replies lag 20 ms, and the delivery reports 30 ms in: after the inference's counter
  // change reached Redis, before the inference side hears back. A state decided from counters read before the
  // other side's change once left a study 'delivering' for good (seen in capability.test.ts).
  const proxy = await slowRepliesProxy(20);
  const slow = new Redis(proxy.url);
  try {
    const inferenceSide = new StudyIndex(slow, prefix);
    const deliverySide = new StudyIndex(redis, prefix);
    const uids = Array.from({ length: 20 }, (_, i) => `2.25.7100${i}`);
    for (const uid of uids) {
      await seed(deliverySide, uid);
      await deliverySide.startRun(uid, 1, 1);
    }
    await slow.ping();
    await Promise.all(
      uids.map((uid) =>
        Promise.all([
          inferenceSide.inferenceDone(uid, 1, 1, `infer-${uid}`),
          setTimeoutPromise(30).then(() => deliverySide.deliveryDone(uid, 1, `deliver-${uid}`)),
        ]),
      ),
    );
    const states = await Promise.all(uids.map(async (uid) => (await deliverySide.get(uid))?.state));
    assert.deepEqual(
      uids.filter((_, i) => states[i] !== 'done'),
      [],
      'every study done once its one inference and its one delivery have reported',
    );
  } finally {
    slow.disconnect();
    await proxy.close();
  }
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
