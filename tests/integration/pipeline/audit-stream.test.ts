// The audit trail's cluster view: two trails (two gateways, each with its own segments) sharing one Redis
// stream. A query on either sees both; where the stream was trimmed, this node's segments fill in and the
// answer says so; with Redis away the segments answer alone, and recording neither waits nor fails.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { AuditTrail, type AuditEvent } from '../../../src/pipeline/audit-trail.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { auditStreamDropped } from '../../../src/observability/metrics.ts';
import { REDIS_URL, waitFor } from '../../helpers/gateway.ts';
import { startPrivateRedis } from '../../helpers/redis-server.ts';

const prefix = `aigw-audit-stream-${randomBytes(4).toString('hex')}`;
let dir: string;
let redis: Redis;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-audit-stream-'));
  redis = new Redis(REDIS_URL);
});

after(async () => {
  const all = await redis.keys(`${prefix}:*`);
  if (all.length) await redis.del(...all);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

const action = (target: string): AuditEvent => ({
  type: 'action',
  actor: 'admin',
  role: 'admin',
  action: 'retry',
  target,
  result: 'ok',
});

async function streamLength(): Promise<number> {
  return redis.xlen(keys.auditStream(prefix));
}

test('records of two gateways are visible through either; the stream carries the writer and the exact line', async () => {
  const a = new AuditTrail();
  const b = new AuditTrail();
  await a.open({ dir: path.join(dir, 'a'), retentionDays: 30, redis, prefix, streamMaxLen: 1000 });
  await b.open({ dir: path.join(dir, 'b'), retentionDays: 30, redis, prefix, streamMaxLen: 1000 });
  try {
    await a.record(action('on-a-1'));
    await b.record(action('on-b-1'));
    await a.record(action('on-a-2'));
    await waitFor('three stream entries', async () => ((await streamLength()) >= 3 ? true : undefined), 5000);

    // Each node's segments hold only its own records.
    assert.deepEqual(
      (await a.query()).map((r) => (r as { target?: string }).target),
      ['on-a-1', 'on-a-2'],
    );
    for (const trail of [a, b]) {
      const { records, source } = await trail.clusterQuery({ type: 'action' });
      assert.equal(source, 'cluster');
      assert.deepEqual(
        records.map((r) => (r as { target?: string }).target),
        ['on-a-1', 'on-b-1', 'on-a-2'],
      );
      assert.ok(records.every((r) => typeof r.node === 'string' && r.node.length > 0));
    }
    // The stream entry is the segment's line, byte for byte, with the node id beside it.
    const entries = await redis.xrange(keys.auditStream(prefix), '-', '+', 'COUNT', 1);
    const fields = entries[0]![1];
    const segment = (await readdir(path.join(dir, 'a')))[0]!;
    const firstLine = (await readFile(path.join(dir, 'a', segment), 'utf8')).split('\n')[0];
    assert.equal(fields[fields.indexOf('rec') + 1], firstLine);
    assert.ok(fields[fields.indexOf('node') + 1]);

    // A time range the stream covers whole is answered from it alone, limit and filters applied.
    const since = Date.now() - 60_000;
    const ranged = await b.clusterQuery({ from: since, limit: 2 });
    assert.equal(ranged.source, 'cluster');
    assert.deepEqual(
      ranged.records.map((r) => (r as { target?: string }).target),
      ['on-b-1', 'on-a-2'],
    );

    // The stream trimmed to its newest record: it does not reach back; this node's segments fill in.
    await redis.xtrim(keys.auditStream(prefix), 'MAXLEN', 1);
    const partA = await a.clusterQuery({ type: 'action' });
    assert.equal(partA.source, 'cluster+local');
    assert.deepEqual(
      partA.records.map((r) => (r as { target?: string }).target),
      ['on-a-1', 'on-a-2'],
      "A's own older record from its segments, the newest from the stream, no duplicate",
    );
  } finally {
    await a.close();
    await b.close();
  }
});

test('with Redis away the segments answer (source local), records are still written at once, and the stream catches up', async () => {
  const priv = await startPrivateRedis();
  const conn = new Redis(priv.url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
  conn.on('error', () => undefined);
  const trail = new AuditTrail();
  await trail.open({
    dir: path.join(dir, 'outage'),
    retentionDays: 30,
    redis: conn,
    prefix,
    streamMaxLen: 100,
  });
  try {
    await trail.record(action('before'));
    await waitFor('stream entry', async () =>
      (await conn.xlen(keys.auditStream(prefix))) === 1 ? true : undefined,
    );
    await priv.kill();
    await waitFor('connection lost', async () => (conn.status !== 'ready' ? true : undefined), 5000);

    const started = Date.now();
    await trail.record(action('during'));
    assert.ok(Date.now() - started < 1000, 'recording did not wait for Redis');
    const during = await trail.clusterQuery({ type: 'action' });
    assert.equal(during.source, 'local');
    assert.deepEqual(
      during.records.map((r) => (r as { target?: string }).target),
      ['before', 'during'],
    );

    // Redis back, empty (no persistence): the buffered record reaches the stream with the next one.
    await priv.start();
    await waitFor('reconnected', async () => (conn.status === 'ready' ? true : undefined), 10_000);
    await trail.record(action('after'));
    await waitFor('buffered record sent', async () =>
      (await conn.xlen(keys.auditStream(prefix))) === 2 ? true : undefined,
    );
    const after = await trail.clusterQuery({ type: 'action' });
    assert.equal(after.source, 'cluster+local', "the stream starts after Redis's restart");
    assert.deepEqual(
      after.records.map((r) => (r as { target?: string }).target),
      ['before', 'during', 'after'],
    );
  } finally {
    await trail.close();
    conn.disconnect();
    await priv.kill();
  }
});

test('beyond the buffer, records are dropped from the stream only, and counted', async () => {
  const priv = await startPrivateRedis();
  const conn = new Redis(priv.url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
  conn.on('error', () => undefined);
  await priv.kill();
  await waitFor('connection lost', async () => (conn.status !== 'ready' ? true : undefined), 5000);
  const trail = new AuditTrail();
  await trail.open({
    dir: path.join(dir, 'drop'),
    retentionDays: 30,
    redis: conn,
    prefix,
    streamMaxLen: 100,
  });
  try {
    const before = (await auditStreamDropped.get()).values[0]?.value ?? 0;
    const batch: Promise<void>[] = [];
    for (let i = 0; i < 10_005; i++) batch.push(trail.record(action(`r${i}`)));
    await Promise.all(batch);
    assert.equal((await auditStreamDropped.get()).values[0]?.value, before + 5);
    assert.equal((await trail.query({ type: 'action' })).length, 10_005, 'every record is in the segments');
  } finally {
    await trail.close();
    conn.disconnect();
  }
});
