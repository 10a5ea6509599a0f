// The study list behind the console against real Redis: filters, sort and paging on the server; the
// in-process cache sees changes made after its first read (incremental, from the changed-studies set) and
// forgets forgotten studies; identifying data masked for a role without the PHI permission and audited
// for one with it; the PNG encoder's output inflates back to the pixels; the console benchmark runs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inflateSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { createAdminApp, listen } from '../../../src/admin/app.ts';
import { StudyListCache } from '../../../src/admin/queries.ts';
import { configSchema } from '../../../src/config/schema.ts';
import { destinationSummaries } from '../../../src/delivery/registry.ts';
import { encodePng } from '../../../src/imaging/png.ts';
import { audit } from '../../../src/pipeline/audit-trail.ts';
import { createQueues, type Queues } from '../../../src/pipeline/queues.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { runConsoleBench, seedStudies } from '../../../bench/console/run.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';

const prefix = `aigw-worklist-${randomBytes(4).toString('hex')}`;
const LEAD = { user: 'lead', password: 'lead-password-1', role: 'operator', phi: true };
const IT = { user: 'it', password: 'it-password-1', role: 'admin', phi: false };
let redis: Redis;
let index: StudyIndex;
let queues: Queues;
let dir: string;
let server: Server;
let base: string;

const as = (u: { user: string; password: string }) => ({
  authorization: `Basic ${Buffer.from(`${u.user}:${u.password}`).toString('base64')}`,
});

interface Page {
  total: number;
  rows: { studyUid: string; modalities: string[]; identity?: Record<string, unknown>; callingAe: string }[];
  facets: { modalities: string[]; callingAes: string[]; models: string[] };
}
async function get<T>(p: string, user: { user: string; password: string } = LEAD): Promise<T> {
  const res = await fetch(`${base}${p}`, { headers: as(user) });
  assert.equal(res.status, 200, `${p}: ${res.status}`);
  return (await res.json()) as T;
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-worklist-'));
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  index = new StudyIndex(redis, prefix);
  const config = configSchema.parse({
    redis: { url: REDIS_URL, prefix, autoStart: false },
    dataDir: dir,
    http: { auth: { basic: [LEAD, IT] } },
  });
  queues = createQueues(redis, config);
  await audit.open({ dir: path.join(dir, 'audit'), retentionDays: 30, redis, prefix });
  await seedStudies(redis, prefix, 120);
  const app = createAdminApp({
    config,
    redis,
    index,
    queues,
    spoolDir: dir,
    store: new FilesystemObjectStore(dir),
    destinations: destinationSummaries(config),
  });
  server = await listen(app, '127.0.0.1', 0);
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

after(async () => {
  await new Promise((r) => server.close(r));
  await audit.close();
  await queues.close();
  const all = await redis.keys(`${prefix}:*`);
  if (all.length) await redis.del(...all);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

test('filters, sort and paging happen on the server', async () => {
  const first = await get<Page>('/api/worklist?limit=25');
  assert.equal(first.total, 120);
  assert.equal(first.rows.length, 25);
  assert.deepEqual(first.facets.modalities, ['CR', 'CT', 'DX', 'MR']);
  const second = await get<Page>('/api/worklist?limit=25&offset=25');
  assert.equal(new Set([...first.rows, ...second.rows].map((r) => r.studyUid)).size, 50);
  const cr = await get<Page>('/api/worklist?limit=500&modality=CR');
  assert.equal(cr.total, 30);
  assert.ok(cr.rows.every((r) => r.modalities.includes('CR')));
  const ae = await get<Page>('/api/worklist?limit=500&ae=ER_XRAY&state=done');
  assert.ok(ae.total > 0 && ae.rows.every((r) => r.callingAe === 'ER_XRAY'));
  const byAe = await get<Page>('/api/worklist?limit=500&sort=callingAe&dir=asc');
  const aes = byAe.rows.map((r) => r.callingAe);
  assert.deepEqual(aes, [...aes].sort());
  const positive = await get<{ rows: { findings: { positive: boolean }[] }[]; total: number }>(
    '/api/worklist?limit=500&positive=true',
  );
  assert.ok(positive.total > 0 && positive.rows.every((r) => r.findings.some((f) => f.positive)));
  for (const bad of ['sort=bogus', 'dir=up', 'positive=maybe', 'offset=-1', 'limit=0', 'state=nope']) {
    const res = await fetch(`${base}/api/worklist?${bad}`, { headers: as(LEAD) });
    assert.equal(res.status, 400, bad);
  }
});

test('the cache sees changes after its first read, and forgets forgotten studies', async () => {
  const cache = new StudyListCache(index);
  const before = await cache.snapshot();
  const uid = '2.25.777000111';
  await index.recordInstance({
    studyUid: uid,
    seriesUid: `${uid}.1`,
    sopInstanceUid: `${uid}.1.1`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.7',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    modality: 'OT',
    size: 1,
    callingAe: 'LATE',
    callingAddress: '127.0.0.1',
    receivedAt: Date.now(),
  });
  let now = await cache.snapshot();
  assert.equal(now.length, before.length + 1);
  await index.setState(uid, 'failed', 'x');
  now = await cache.snapshot();
  assert.equal(now.find((s) => s.studyUid === uid)!.state, 'failed');
  const last = now.find((s) => s.studyUid === uid)!.lastReceivedAt;
  assert.equal(await index.forgetStudy(uid, last), true);
  now = await cache.snapshot();
  assert.equal(now.length, before.length);
});

test('identifying data: shown and audited with the PHI permission, masked without (whatever the role)', async () => {
  const shown = await get<Page>('/api/worklist?limit=5&q=ACC1');
  assert.ok(shown.rows.length > 0);
  assert.match(String(shown.rows[0]!.identity!.accessionNumber), /^ACC1/);
  assert.equal(shown.rows[0]!.identity!.masked, false);
  // The admin without the permission: masked, and the accession is not searchable.
  const masked = await get<Page>('/api/worklist?limit=5', IT);
  assert.deepEqual(masked.rows[0]!.identity, {
    accessionNumber: '•••',
    patientId: '•••',
    patientName: '•••',
    masked: true,
  });
  assert.equal((await get<Page>('/api/worklist?q=ACC1', IT)).total, 0);
  const one = await get<{ identity: Record<string, unknown> }>(`/api/studies/${shown.rows[0]!.studyUid}`, IT);
  assert.equal(one.identity.patientName, '•••');
  const stored = await redis.hvals(`${prefix}:study:${shown.rows[0]!.studyUid}:instances`);
  assert.ok(
    stored.every((v) => !v.includes('ACC1') && !v.includes('Doe^')),
    'never in instance records',
  );
  await get(`/api/studies/${shown.rows[0]!.studyUid}`);
  const views = (await audit.query({ type: 'action', limit: 100 })).filter(
    (r) => r.type === 'action' && r.action === 'view-phi',
  );
  assert.ok(
    views.some((v) => v.type === 'action' && v.actor === 'lead' && v.target === shown.rows[0]!.studyUid),
  );
  assert.ok(views.every((v) => v.type === 'action' && v.actor === 'lead'));
});

test('the PNG encoder writes what inflates back to the pixels', () => {
  const pixels = Uint8Array.from({ length: 6 * 4 }, (_, i) => (i * 11) % 256);
  const png = encodePng(pixels, 6, 4, 1);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.equal(png.readUInt32BE(16), 6);
  assert.equal(png.readUInt32BE(20), 4);
  const idatAt = png.indexOf('IDAT');
  const raw = inflateSync(png.subarray(idatAt + 4, idatAt + 4 + png.readUInt32BE(idatAt - 4)));
  for (let y = 0; y < 4; y++) {
    assert.equal(raw[y * 7], 0);
    assert.deepEqual([...raw.subarray(y * 7 + 1, y * 7 + 7)], [...pixels.subarray(y * 6, y * 6 + 6)]);
  }
});

test('the console benchmark runs (small), every request answered', async () => {
  const lines = await runConsoleBench(500, 3);
  assert.equal(lines.length, 9);
  assert.ok(lines.every((l) => l.p50 > 0 && l.total > 0));
});
