// Dead workers' heartbeat entries are pruned by the gateway holding the maintenance lease, by Redis time,
// even when no worker is alive to prune them in its own beat; live entries stay.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { pruneDeadWorkers } from '../../../src/inference/runtime/heartbeat.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { redisTimeMs } from '../../../src/pipeline/redis.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';

const redis = new Redis(REDIS_URL);
const prefix = `aigw-test-prune-${randomBytes(4).toString('hex')}`;

after(async () => {
  await redis.del(keys.workers(prefix));
  redis.disconnect();
});

test('pruneDeadWorkers removes entries dead past the retention (and unparseable ones), keeps the live', async () => {
  const now = await redisTimeMs(redis);
  const beat = (id: string, at: number) =>
    JSON.stringify({ workerId: id, host: 'h', pid: 1, lastHeartbeat: at, startedAt: at - 1000 });
  await redis.hset(keys.workers(prefix), {
    live: beat('live', now),
    recentlyDead: beat('recentlyDead', now - 30_000),
    longDead: beat('longDead', now - 2 * 3_600_000),
    garbage: 'not json',
  });
  const removed = await pruneDeadWorkers(redis, prefix, 3_600_000);
  assert.deepEqual(removed.sort(), ['garbage', 'longDead']);
  assert.deepEqual(Object.keys(await redis.hgetall(keys.workers(prefix))).sort(), ['live', 'recentlyDead']);
});
