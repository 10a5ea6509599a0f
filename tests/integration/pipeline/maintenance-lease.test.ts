// The maintenance lease on a real Redis: one holder at a time among contenders, takeover after the holder
// stops renewing (only once its lease expired) and at once after a clean release, and cluster maintenance
// (retention) running on the holder only.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MaintenanceLease } from '../../../src/pipeline/maintenance-lease.ts';
import { clusterMaintenance } from '../../../src/pipeline/maintenance.ts';
import { createIngestRedis } from '../../../src/pipeline/redis.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';
import { waitFor } from '../../helpers/gateway.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const admin = new Redis(REDIS_URL);
const prefixes: string[] = [];
const newPrefix = () => {
  const p = `aigw-test-lease-${randomBytes(4).toString('hex')}`;
  prefixes.push(p);
  return p;
};
const connections: Redis[] = [];
async function connect(): Promise<Redis> {
  const r = await createIngestRedis(REDIS_URL);
  connections.push(r);
  return r;
}

after(async () => {
  for (const p of prefixes) {
    const found = await admin.keys(`${p}*`);
    if (found.length) await admin.del(...found);
  }
  for (const c of connections) c.disconnect();
  admin.disconnect();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A contender whose maintenance only records that it runs, and when. */
function contender(redis: Redis, prefix: string, id: string, ttlMs: number) {
  const log: { started: number[]; stopped: number[]; running: boolean } = {
    started: [],
    stopped: [],
    running: false,
  };
  const lease = new MaintenanceLease({
    redis,
    prefix,
    ttlMs,
    id,
    onAcquired: () => {
      log.started.push(Date.now());
      log.running = true;
      return () => {
        log.running = false;
        log.stopped.push(Date.now());
      };
    },
  });
  return { lease, log };
}

test('of two contenders exactly one holds the lease, renewed past its ttl; a clean release hands over at once', async () => {
  const prefix = newPrefix();
  const TTL = 900;
  const a = contender(await connect(), prefix, 'gw-a', TTL);
  const b = contender(await connect(), prefix, 'gw-b', TTL);
  a.lease.start();
  b.lease.start();
  await waitFor('a holder', async () => (a.lease.isHeld || b.lease.isHeld ? true : undefined), 5000);
  const [holder, other] = a.lease.isHeld ? [a, b] : [b, a];
  // Three ttls: the holder renews (never both, never a change of holder, maintenance running on one only).
  const until = Date.now() + 3 * TTL;
  while (Date.now() < until) {
    assert.equal(holder.lease.isHeld, true, 'the holder kept it');
    assert.equal(other.lease.isHeld, false, 'never two holders');
    assert.equal(holder.log.running && !other.log.running, true, 'maintenance runs on the holder only');
    assert.equal(await admin.get(keys.maintenanceLease(prefix)), holder.lease.id);
    await sleep(50);
  }
  assert.equal(holder.log.started.length, 1, 'acquired once, then renewed');
  assert.equal(other.log.started.length, 0);
  const seen = await other.lease.holder();
  assert.equal(seen.holder, holder.lease.id);
  assert.equal(seen.self, false);
  assert.equal((await holder.lease.holder()).self, true);

  // Clean stop: maintenance stopped, the key deleted, the other takes over well before the ttl would expire.
  const released = Date.now();
  await holder.lease.stop();
  assert.equal(holder.log.running, false);
  assert.notEqual(await admin.get(keys.maintenanceLease(prefix)), holder.lease.id, 'released');
  await waitFor('takeover after release', async () => (other.lease.isHeld ? true : undefined), 3000);
  const tookMs = other.log.started[0]! - released;
  assert.ok(tookMs <= TTL / 3 + 250, `took over ${tookMs} ms after the release (retry every ${TTL / 3} ms)`);
  await other.lease.stop();
});

test('a holder that stops renewing loses the lease at once; another takes over only after it expired', async () => {
  const prefix = newPrefix();
  const TTL = 1500;
  const holderRedis = await connect();
  const a = contender(holderRedis, prefix, 'gw-a', TTL);
  a.lease.start();
  await waitFor('a holds', async () => (a.lease.isHeld ? true : undefined), 5000);
  const b = contender(await connect(), prefix, 'gw-b', TTL);
  b.lease.start();
  await sleep(TTL / 3 + 100);
  assert.equal(b.lease.isHeld, false);

  // The holder's Redis goes away (its host is cut off): its renewal fails, maintenance stops at once there;
  // its key stays on Redis until it expires, and only then does the other take over.
  const cutAt = Date.now();
  holderRedis.disconnect();
  await waitFor('the holder gave up', async () => (!a.lease.isHeld ? true : undefined), TTL + 500);
  assert.equal(a.log.running, false, 'maintenance stopped on the holder that lost the lease');
  assert.ok(Date.now() - cutAt <= TTL, 'given up before its lease could have expired on Redis');
  assert.equal(await admin.get(keys.maintenanceLease(prefix)), 'gw-a', 'still held on Redis until expiry');
  const pttl = await admin.pttl(keys.maintenanceLease(prefix));
  await waitFor('takeover after expiry', async () => (b.lease.isHeld ? true : undefined), 2 * TTL + 1000);
  const waited = b.log.started[0]! - cutAt;
  assert.ok(waited >= pttl - 50, `took over ${waited} ms after the cut, the lease had ${pttl} ms left`);
  assert.equal(await admin.get(keys.maintenanceLease(prefix)), 'gw-b');
  await b.lease.stop();
  await a.lease.stop();
});

test('a renewal that finds another token stops the maintenance (the lease was taken after expiry)', async () => {
  const prefix = newPrefix();
  const TTL = 900;
  const a = contender(await connect(), prefix, 'gw-a', TTL);
  a.lease.start();
  await waitFor('a holds', async () => (a.lease.isHeld ? true : undefined), 5000);
  // As if a's lease had expired during a pause and another gateway took it.
  await admin.set(keys.maintenanceLease(prefix), 'gw-z', 'PX', 10_000);
  await waitFor('a noticed', async () => (!a.lease.isHeld ? true : undefined), TTL);
  assert.equal(a.log.running, false);
  assert.equal(await admin.get(keys.maintenanceLease(prefix)), 'gw-z', 'the other holder is left alone');
  await a.lease.stop();
  assert.equal(
    await admin.get(keys.maintenanceLease(prefix)),
    'gw-z',
    'stop does not delete a foreign lease',
  );
});

/** A store that counts the retirements asked of it (the real ones happen). */
class CountingStore extends FilesystemObjectStore {
  retired = 0;
  override async retire(key: string, writtenBy: number) {
    this.retired++;
    return super.retire(key, writtenBy);
  }
}

test('retention runs on the lease holder only, and on the other gateway once it took over', async (t) => {
  const prefix = newPrefix();
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-lease-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bull = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  connections.push(bull);
  const deliveryQueue = new Queue('delivery', { connection: bull, prefix });
  t.after(() => deliveryQueue.close());
  const HOUR = 3_600_000;
  const YEAR = 365 * 24 * HOUR;

  // Two "gateways" sharing one spool directory and one Redis, each with its own connections.
  async function gateway(id: string) {
    const redis = await connect();
    const spool = new CountingStore(dir);
    await spool.init();
    const index = new StudyIndex(redis, prefix);
    const stopped: string[] = [];
    const lease = new MaintenanceLease({
      redis,
      prefix,
      ttlMs: 1200,
      id,
      onAcquired: clusterMaintenance({
        retention: {
          index,
          store: spool,
          deliveryQueue,
          queues: [],
          resultsDir: path.join(dir, 'results'),
          policy: {
            spoolMs: 0,
            outboxMs: YEAR,
            failedMs: YEAR,
            failedJobMs: YEAR,
            resultsMs: YEAR,
            studyRecordMs: YEAR,
          },
        },
        retentionIntervalMs: 200,
        reconcile: {
          store: spool,
          index,
          studyCompleteQueue: new Queue('study-complete', { connection: bull, prefix }),
          quietPeriodMs: 60_000,
          redis,
          intervalMs: 60_000,
        },
        sweepTemp: async () => 0,
        pruneWorkers: async () => stopped.push('pruned'),
        sweepIntervalMs: 200,
      }),
    });
    return { lease, spool, index, stopped };
  }

  /** A study whose SR was delivered, with one spooled instance: due at once (spool retention 0). */
  let seq = 0;
  async function dueStudy(index: StudyIndex, spool: CountingStore): Promise<string> {
    const studyUid = `2.25.${Date.now()}${++seq}`;
    const key = { studyUid, seriesUid: '1.2.3', sopInstanceUid: `${studyUid}.9` };
    await spool.put(objectKey.instance(key), Buffer.from('x'));
    await index.recordInstance({
      ...key,
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      transferSyntaxUid: '1.2.840.10008.1.2.1',
      size: 1,
      callingAe: 'MOD',
      callingAddress: '127.0.0.1',
      receivedAt: Date.now(),
    });
    await index.startRun(studyUid, 1, 1);
    await index.inferenceDone(studyUid, 1, 1);
    await index.deliveryDone(studyUid, 1);
    return studyUid;
  }

  const a = await gateway('gw-a');
  const b = await gateway('gw-b');
  a.lease.start();
  await waitFor('a holds', async () => (a.lease.isHeld ? true : undefined), 5000);
  b.lease.start();

  const first = await dueStudy(a.index, a.spool);
  await waitFor('retention removed the first study', async () =>
    (await a.index.instances(first)).length === 0 ? true : undefined,
  );
  assert.ok(a.spool.retired >= 1, 'the holder retired it');
  assert.equal(b.spool.retired, 0, 'the other gateway ran no retention');
  assert.equal(b.stopped.length, 0, 'nor the heartbeat pruning');
  assert.ok(a.stopped.length >= 1);

  // The holder stops cleanly: the other takes over and its retention removes the next study.
  await a.lease.stop();
  await waitFor('b holds', async () => (b.lease.isHeld ? true : undefined), 5000);
  const retiredByA = a.spool.retired;
  const second = await dueStudy(b.index, b.spool);
  await waitFor('retention removed the second study', async () =>
    (await b.index.instances(second)).length === 0 ? true : undefined,
  );
  assert.ok(b.spool.retired >= 1, 'the new holder retired it');
  assert.equal(a.spool.retired, retiredByA, 'the old holder ran no more retention');
  await b.lease.stop();
});
