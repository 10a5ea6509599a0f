// The audit trail on disk: durable JSONL segments that a new process reads back, queries by study, type
// and time, per-study batching of received instances, retention, torn lines, and the Redis summary the
// study list reads, and the per-study event index the study page reads.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, mock, test } from 'node:test';
import { Redis } from 'ioredis';
import {
  AuditTrail,
  auditToCsv,
  STUDY_EVENTS_KEPT,
  type AuditRecord,
} from '../../../src/pipeline/audit-trail.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';

const STUDY = '1.2.826.0.1.3680043.10.543.77';
const OTHER = '1.2.826.0.1.3680043.10.543.78';
const prefix = `aigw-audit-${randomBytes(4).toString('hex')}`;
let dir: string;
let redis: Redis;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-audit-'));
  redis = new Redis(REDIS_URL);
});

after(async () => {
  const all = await redis.keys(`${prefix}:*`);
  if (all.length) await redis.del(...all);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

test('a study’s history is written durably and read back by a new trail (a restart)', async () => {
  const auditDir = path.join(dir, 'restart');
  const first = new AuditTrail();
  await first.open({ dir: auditDir, retentionDays: 30, redis, prefix });
  for (let i = 0; i < 3; i++) first.noteReceived(STUDY, 'CT_SCANNER', '10.0.0.5', 1000 + i);
  first.noteReceived(OTHER, 'MR_1', '10.0.0.6', 50);
  await first.flushReceived(STUDY);
  await first.record({
    type: 'routed',
    studyUid: STUDY,
    run: 1,
    instances: 3,
    jobs: [{ model: 'm', version: '1', destinations: ['pacs'], jobId: 'infer|x' }],
  });
  await first.record({
    type: 'inferred',
    studyUid: STUDY,
    run: 1,
    model: 'm',
    version: '1',
    provider: 'cuda',
    srUid: '1.2.3.4',
    instances: 3,
    inferenceMs: 120,
    jobId: 'infer|x',
  });
  await first.record({
    type: 'delivered',
    studyUid: STUDY,
    srUid: '1.2.3.4',
    destination: 'pacs',
    jobId: 'd',
    attempt: 2,
  });
  await first.close(); // flushes OTHER's pending batch too

  const second = new AuditTrail();
  await second.open({ dir: auditDir, retentionDays: 30 });
  const events = await second.query({ studyUid: STUDY });
  assert.deepEqual(
    events.map((e) => e.type),
    ['received', 'routed', 'inferred', 'delivered'],
  );
  const received = events[0] as AuditRecord & {
    instances: number;
    bytes: number;
    callingAe: string;
    address: string;
  };
  assert.equal(received.instances, 3, 'one event for the batch, with the count');
  assert.equal(received.bytes, 3003);
  assert.equal(received.callingAe, 'CT_SCANNER');
  assert.equal(received.address, '10.0.0.5');
  const inferred = events[2] as AuditRecord & { provider: string; version: string; srUid: string };
  assert.deepEqual([inferred.provider, inferred.version, inferred.srUid], ['cuda', '1', '1.2.3.4']);
  assert.equal((await second.query({ studyUid: OTHER })).length, 1, 'pending batches are written on close');
  assert.equal((await second.query({ type: 'delivered' })).length, 1);
  assert.equal((await second.query({ from: Date.now() + 60_000 })).length, 0);
  assert.equal((await second.query({ to: Date.parse(events[0]!.at) - 1 })).length, 0);
  assert.equal((await second.query({ limit: 2 })).length, 2);

  const summary = await redis.hgetall(keys.auditStudy(prefix, STUDY));
  assert.ok(
    Number(summary.routedAt) > 0 && Number(summary.inferredAt) > 0 && Number(summary.deliveredAt) > 0,
  );
  assert.equal(JSON.parse(summary['model:m@1']!).provider, 'cuda');
  await second.close();
});

test('a torn last line (crash mid-append) is skipped, later appends still read', async () => {
  const auditDir = path.join(dir, 'torn');
  const trail = new AuditTrail();
  await trail.open({ dir: auditDir, retentionDays: 30 });
  await trail.record({
    type: 'failed',
    studyUid: STUDY,
    stage: 'delivery',
    reason: 'PACS said 400',
    jobId: 'd1',
  });
  const [segment] = (await readdir(auditDir)).filter((n) => n.endsWith('.jsonl'));
  await appendFile(path.join(auditDir, segment!), '{"type":"failed","studyUid":"1.2');
  await appendFile(path.join(auditDir, segment!), '\n');
  await trail.record({ type: 'failed', studyUid: STUDY, stage: 'delivery', reason: 'again', jobId: 'd2' });
  const events = (await trail.query({ studyUid: STUDY })) as (AuditRecord & { reason: string })[];
  assert.deepEqual(
    events.map((e) => e.reason),
    ['PACS said 400', 'again'],
  );
  const text = await readFile(path.join(auditDir, segment!), 'utf8');
  assert.equal(text.split('\n').filter(Boolean).length, 3);
  await trail.close();
});

test('retention deletes whole segments older than the setting and keeps the rest', async () => {
  const auditDir = path.join(dir, 'retention');
  const trail = new AuditTrail();
  await trail.open({ dir: auditDir, retentionDays: 10 });
  const day = (msAgo: number) => new Date(Date.now() - msAgo).toISOString().slice(0, 10);
  const old = `audit-${day(40 * 86_400_000)}.jsonl`;
  const recent = `audit-${day(2 * 86_400_000)}.jsonl`;
  await writeFile(path.join(auditDir, old), '{}\n');
  await writeFile(path.join(auditDir, recent), '{}\n');
  await writeFile(path.join(auditDir, 'notes.txt'), 'not a segment');
  const removed = await trail.prune();
  assert.deepEqual(removed, [old]);
  assert.deepEqual((await readdir(auditDir)).sort(), ['notes.txt', recent].sort());
  await trail.close();
});

test('an unopened trail drops events instead of failing the pipeline', async () => {
  const trail = new AuditTrail();
  await trail.record({ type: 'failed', studyUid: STUDY, stage: 'x', reason: 'y', jobId: 'z' });
  trail.noteReceived(STUDY, 'A', '1.2.3.4', 1);
  assert.deepEqual(await trail.query(), []);
});

test('CSV export quotes every cell and neutralises spreadsheet formulas', () => {
  const csv = auditToCsv([
    {
      type: 'action',
      actor: '@admin',
      role: 'admin',
      action: 'reprocess',
      target: STUDY,
      result: 'ok',
      detail: 'line1\nline2, "quoted"',
      at: '2026-01-01T00:00:00.000Z',
      host: 'h',
      pid: 1,
    },
  ]);
  const [header, row] = csv.split('\r\n');
  assert.ok(header!.startsWith('at,type,studyUid,callingAe,address,instances,'));
  assert.ok(row!.includes(`"'@admin"`));
  assert.ok(row!.includes('"line1\nline2, ""quoted"""'));
});

test('the study page index: the study’s own events in Redis, capped, rebuilt from the segments when lost', async () => {
  const auditDir = path.join(dir, 'study-index');
  const trail = new AuditTrail();
  await trail.open({ dir: auditDir, retentionDays: 30, redis, prefix });
  const study = '1.2.826.0.1.3680043.10.543.90';
  const list = keys.auditStudyEvents(prefix, study);
  const routed = (run: number) =>
    trail.record({ type: 'routed', studyUid: study, run, instances: 1, jobs: [] });
  const action = (uid: string) =>
    trail.record({
      type: 'action',
      actor: 'ops',
      role: 'admin',
      action: 'reprocess',
      target: uid,
      studyUid: uid,
      result: 'ok',
    });
  try {
    // The study's first event starts its list; later ones, admin actions too, append to it.
    await routed(1);
    await action(study);
    await trail.record({ type: 'failed', studyUid: study, stage: 'delivery', reason: 'refused', jobId: 'd' });
    assert.equal(await redis.llen(list), 3);
    assert.ok((await redis.pttl(list)) > 29 * 86_400_000, 'expires with the audit retention');
    assert.deepEqual(await trail.studyEvents(study), await trail.query({ studyUid: study }));

    // A lost index (Redis wiped, or events older than the index): later events do not start a list that
    // would begin halfway; the page scans the segments once and rebuilds the index from them.
    await redis.del(list);
    await routed(2);
    assert.equal(await redis.exists(list), 0, 'no list that begins halfway');
    const all = await trail.query({ studyUid: study });
    assert.equal(all.length, 4);
    assert.deepEqual(await trail.studyEvents(study), all);
    assert.equal(await redis.llen(list), 4, 'rebuilt from the segments');
    await routed(3);
    assert.deepEqual(
      (await trail.studyEvents(study)).map((e) => (e as { run?: number }).run),
      [1, undefined, undefined, 2, 3],
    );

    // An admin action alone does not start a list either; the page still finds it in the segments.
    const other = '1.2.826.0.1.3680043.10.543.91';
    await action(other);
    assert.equal(await redis.exists(keys.auditStudyEvents(prefix, other)), 0);
    assert.deepEqual(
      (await trail.studyEvents(other)).map((e) => e.type),
      ['action'],
    );

    // Capped: the page shows the newest STUDY_EVENTS_KEPT; the export has them all.
    const busy = '1.2.826.0.1.3680043.10.543.92';
    await Promise.all(
      Array.from({ length: STUDY_EVENTS_KEPT + 20 }, (_, run) =>
        trail.record({ type: 'routed', studyUid: busy, run, instances: 1, jobs: [] }),
      ),
    );
    const everything = await trail.query({ studyUid: busy });
    assert.equal(everything.length, STUDY_EVENTS_KEPT + 20);
    assert.equal(await redis.llen(keys.auditStudyEvents(prefix, busy)), STUDY_EVENTS_KEPT);
    assert.deepEqual(await trail.studyEvents(busy), everything.slice(-STUDY_EVENTS_KEPT));
  } finally {
    await trail.close();
  }
});

test('without its index, a study page reads only the newest segments, up to a byte budget', async () => {
  const auditDir = path.join(dir, 'study-scan-budget');
  const study = '1.2.826.0.1.3680043.10.543.93';
  const trail = new AuditTrail();
  await trail.open({ dir: auditDir, retentionDays: 30 }); // no Redis: the page always scans
  const yesterday = Date.now() - 86_400_000;
  mock.timers.enable({ apis: ['Date'], now: yesterday });
  try {
    await trail.record({ type: 'routed', studyUid: study, run: 1, instances: 1, jobs: [] });
    // Filler from other studies, so the old event lies beyond the budget.
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        trail.record({ type: 'routed', studyUid: `${study}.${i}`, run: 1, instances: 1, jobs: [] }),
      ),
    );
  } finally {
    mock.timers.reset();
  }
  await trail.record({ type: 'routed', studyUid: study, run: 2, instances: 1, jobs: [] });
  const segments = (await readdir(auditDir)).sort();
  assert.equal(segments.length, 2);
  const newest = (await readFile(path.join(auditDir, segments[1]!))).length;
  await trail.close();

  const bounded = new AuditTrail();
  await bounded.open({ dir: auditDir, retentionDays: 30, studyScanBytes: newest + 1024 });
  try {
    assert.equal((await bounded.query({ studyUid: study })).length, 2, 'the export reads everything');
    assert.deepEqual(
      (await bounded.studyEvents(study)).map((e) => (e as { run?: number }).run),
      [2],
      'the page read the newest segment and only 1 KiB of the one before',
    );
  } finally {
    await bounded.close();
  }
});
