// The storage seam's promise: Redis and job data hold object keys, or the UIDs they derive from, never a
// host path, so a worker or a gateway on another machine can serve any study. A study goes the whole way
// (DIMSE ingest → routing → inference → SR in the outbox → delivery to the results folder) through a real
// gateway process, then every value under its Redis prefix (index records, BullMQ job data, return values,
// logs, audit) is read and searched for the data directory's absolute path.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import {
  makeModelsDir,
  REDIS_URL,
  SHARED,
  startGateway,
  waitFor,
  type GatewayProcess,
} from '../helpers/gateway.ts';

const SERIES = path.join(SHARED, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm');
let gateway: GatewayProcess | undefined;

after(async () => {
  await gateway?.dispose();
});

/** Every value Redis holds under the prefix, whatever the key's type, as text. */
async function valuesUnder(redis: Redis, prefix: string): Promise<Map<string, string>> {
  const values = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
    cursor = next;
    for (const key of keys) {
      const type = await redis.type(key);
      let value: unknown;
      if (type === 'string') value = await redis.get(key);
      else if (type === 'hash') value = await redis.hgetall(key);
      else if (type === 'list') value = await redis.lrange(key, 0, -1);
      else if (type === 'set') value = await redis.smembers(key);
      else if (type === 'zset') value = await redis.zrange(key, '0', '-1');
      else if (type === 'stream') value = await redis.xrange(key, '-', '+');
      else continue;
      values.set(key, JSON.stringify(value));
    }
  } while (cursor !== '0');
  return values;
}

test('after a study went from ingest to delivery, no host path is in Redis or in any job', async () => {
  const files = readdirSync(SERIES)
    .filter((f) => f.endsWith('.dcm'))
    .sort()
    .slice(0, 6)
    .map((f) => path.join(SERIES, f));
  gateway = await startGateway({ modelsDir: await makeModelsDir(['uniformity']) });
  const stored = await gateway.store(files, { aet: 'CT_SCANNER' });
  assert.equal(stored.code, 0, stored.stderr);

  // Delivered to the built-in results folder: every stage ran and wrote its job data.
  await waitFor('the study to be done', async () => {
    const studies = await gateway!.api<{ state: string }[]>('/api/studies');
    return studies.length === 1 && studies[0]!.state === 'done' ? true : undefined;
  });
  const results = readdirSync(path.join(gateway.dataDir, 'results'), { recursive: true });
  assert.ok(
    results.some((f) => String(f).endsWith('.dcm')),
    'the SR was delivered',
  );

  const redis = new Redis(REDIS_URL);
  try {
    const values = await valuesUnder(redis, gateway.prefix);
    // The search must have something to search: index records and the jobs of all three queues.
    const keys = [...values.keys()];
    // Inference queues are per model: `inference.<id>@<version>`.
    for (const queue of ['study-complete', 'inference.', 'delivery'])
      assert.ok(
        keys.some(
          (k) =>
            k.includes(`:${queue}${queue.endsWith('.') ? '' : ':'}`) && values.get(k)!.includes('"data"'),
        ),
        `job data of the ${queue} queue was read`,
      );
    const dataDir = path.resolve(gateway.dataDir);
    const leaks = [...values]
      .filter(([, v]) => v.includes(dataDir) || v.includes('spool/studies') || v.includes('"path"'))
      .map(([k, v]) => `${k}: ${v.slice(0, 300)}`);
    assert.deepEqual(leaks, [], 'host paths in Redis');
  } finally {
    redis.disconnect();
  }
});
