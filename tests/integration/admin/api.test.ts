// The admin REST API against real Redis and BullMQ: every route documented in the OpenAPI document, the
// study list with filter and search, the actions (with their audit records), the records other roles write
// (read defensively), and access control (loopback default, basic/bearer, read vs admin roles).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { createAdminApp, listen } from '../../../src/admin/app.ts';
import { destinationSummaries } from '../../../src/delivery/registry.ts';
import { createApiRouter } from '../../../src/admin/api.ts';
import { assertAuthForBinding, isLoopbackHost } from '../../../src/admin/auth.ts';
import { openapiDocument } from '../../../src/admin/openapi.ts';
import type { InstanceAcceptor } from '../../../src/ingest/accept.ts';
import { createStowRouter } from '../../../src/ingest/stowrs/index.ts';
import { audit, type AuditRecord } from '../../../src/pipeline/audit-trail.ts';
import { ConfigError, loadConfig } from '../../../src/config/load.ts';
import { configSchema, type GatewayConfig } from '../../../src/config/schema.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { jobId, type InferenceJob } from '../../../src/pipeline/jobs.ts';
import { keys } from '../../../src/pipeline/keys.ts';
import { createQueues, type Queues } from '../../../src/pipeline/queues.ts';
import { runTool } from '../../helpers/dicom-tools.ts';
import { REDIS_URL, REPO } from '../../helpers/gateway.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';

const prefix = `aigw-admin-${randomBytes(4).toString('hex')}`;
const STUDY_A = '1.2.826.0.1.3680043.10.543.1';
const STUDY_B = '1.2.826.0.1.3680043.10.543.2';
const ADMIN_TOKEN = 'admin-token-0123456789abcdef';
const READ_TOKEN = 'read-token-0123456789abcdef';

let redis: Redis;
let queues: Queues;
let index: StudyIndex;
let dir: string;
const servers: Server[] = [];

function config(extra: Record<string, unknown> = {}): GatewayConfig {
  return configSchema.parse({ redis: { url: REDIS_URL, prefix, autoStart: false }, dataDir: dir, ...extra });
}

async function serve(cfg: GatewayConfig): Promise<string> {
  const app = createAdminApp({
    config: cfg,
    redis,
    index,
    queues,
    spoolDir: dir,
    store: new FilesystemObjectStore(dir),
    destinations: destinationSummaries(cfg),
  });
  const server = await listen(app, '127.0.0.1', 0);
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

async function post(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'POST', headers });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function seedInstance(studyUid: string, n: number, callingAe: string) {
  await index.recordInstance({
    studyUid,
    seriesUid: `${studyUid}.1`,
    sopInstanceUid: `${studyUid}.1.${n}`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.1',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    size: 1000,
    callingAe,
    callingAddress: '127.0.0.1',
    receivedAt: Date.now(),
  });
}

function inferenceJob(studyUid: string, run: number): InferenceJob {
  return {
    studyUid,
    seriesUids: [`${studyUid}.1`],
    modelId: 'm',
    modelVersion: '1',
    destinations: ['local-folder'],
    priority: 5,
    run,
  };
}

let base: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-admin-'));
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  index = new StudyIndex(redis, prefix);
  queues = createQueues(redis, config());
  await audit.open({ dir: path.join(dir, 'audit'), retentionDays: 30, redis, prefix });
  await seedInstance(STUDY_A, 1, 'CT_SCANNER');
  await seedInstance(STUDY_A, 2, 'CT_SCANNER');
  await seedInstance(STUDY_B, 1, 'ER_XRAY');
  await index.setState(STUDY_B, 'failed', 'inference: model crashed');
  base = await serve(config());
});

after(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
  await audit.close();
  await queues.close();
  const all = await redis.keys(`${prefix}:*`);
  if (all.length) await redis.del(...all);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

/** Routes an Express router serves, as 'METHOD /path' with OpenAPI-style {params}. */
function routesOf(router: { stack: unknown[] }, mount = ''): string[] {
  const out: string[] = [];
  for (const layer of router.stack as { route?: { path: string; methods: Record<string, boolean> } }[]) {
    if (!layer.route) continue;
    const p = (mount + layer.route.path).replace(/:([A-Za-z]+)/g, '{$1}');
    for (const m of Object.keys(layer.route.methods)) out.push(`${m.toUpperCase()} ${p}`);
  }
  return out;
}

test('every route the app serves is in the OpenAPI document, and the document is served', async () => {
  const app = createAdminApp({
    config: config(),
    redis,
    index,
    queues,
    spoolDir: dir,
    store: new FilesystemObjectStore(dir),
    destinations: destinationSummaries(config()),
  });
  const api = createApiRouter({
    redis,
    prefix,
    index,
    queues,
    destinations: [],
    workerStaleMs: 30_000,
    store: new FilesystemObjectStore(dir),
  }) as unknown as { stack: unknown[] };
  // STOW-RS is mounted at /dicomweb when enabled; only its route table is read here.
  const stow = createStowRouter({
    acceptor: {} as InstanceAcceptor,
    maxRequestBytes: 1,
    maxInstanceBytes: 1,
  }) as unknown as { stack: unknown[] };
  const served = [
    ...routesOf((app as unknown as { router: { stack: unknown[] } }).router),
    ...routesOf(api, '/api'),
    ...routesOf(stow, '/dicomweb'),
  ];
  assert.ok(served.length >= 20, `found ${served.length} routes`);
  const documented = new Set(
    Object.entries(openapiDocument.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    ),
  );
  const missing = served.filter((r) => !documented.has(r));
  assert.deepEqual(missing, [], 'routes missing from /api/openapi.json');
  const extra = [...documented].filter((r) => !served.includes(r));
  assert.deepEqual(extra, [], 'documented routes the app does not serve');

  const res = await fetch(`${base}/api/openapi.json`);
  assert.equal(res.status, 200);
  const doc = (await res.json()) as { openapi: string; paths: Record<string, unknown> };
  assert.match(doc.openapi, /^3\./);
  assert.ok(doc.paths['/api/studies/{uid}/reprocess']);
});

test('studies: list, filter by state, search, detail; invalid input is a 400 with the reason', async () => {
  const all = (await (await fetch(`${base}/api/studies`)).json()) as {
    studyUid: string;
    instanceCount: number;
  }[];
  assert.deepEqual(all.map((s) => s.studyUid).sort(), [STUDY_A, STUDY_B]);
  assert.equal(all.find((s) => s.studyUid === STUDY_A)!.instanceCount, 2);

  const failed = (await (await fetch(`${base}/api/studies?state=failed`)).json()) as {
    studyUid: string;
    failure: string;
  }[];
  assert.deepEqual(
    failed.map((s) => s.studyUid),
    [STUDY_B],
  );
  assert.equal(failed[0]!.failure, 'inference: model crashed');
  const byAe = (await (await fetch(`${base}/api/studies?q=ct_scan`)).json()) as { studyUid: string }[];
  assert.deepEqual(
    byAe.map((s) => s.studyUid),
    [STUDY_A],
  );

  const detail = (await (await fetch(`${base}/api/studies/${STUDY_A}`)).json()) as {
    callingAe: string;
    stages: Record<string, number | null>;
    jobs: unknown[];
    events: unknown[];
  };
  assert.equal(detail.callingAe, 'CT_SCANNER');
  assert.equal(detail.stages.inference, null, 'no inference yet');
  assert.ok(Array.isArray(detail.jobs) && Array.isArray(detail.events));

  const bad = await fetch(`${base}/api/studies/not-a-uid`);
  assert.equal(bad.status, 400);
  assert.match(((await bad.json()) as { error: string }).error, /UID/);
  assert.equal((await fetch(`${base}/api/studies/1.2.3.4.5`)).status, 404);
  assert.equal((await fetch(`${base}/api/studies?state=bogus`)).status, 400);
  assert.equal((await fetch(`${base}/api/studies?limit=0`)).status, 400);
  assert.equal((await fetch(`${base}/api/nothing-here`)).status, 404);

  // The dashboard summary counts studies by state, as the list shows them.
  const overview = (await (await fetch(`${base}/api/overview`)).json()) as {
    studies: Record<string, number>;
  };
  const listed = (await (await fetch(`${base}/api/studies`)).json()) as { state: string }[];
  for (const [state, n] of Object.entries(overview.studies)) {
    assert.equal(n, listed.filter((s) => s.state === state).length, state);
  }
  assert.equal(overview.studies.failed, 1);
});

test('actions: pause/resume, reprocess, cancel, retry; each audited with who did it', async () => {
  // The model's queue (inference.m@1): known once a worker or a job registered it.
  const mq = queues.inference.forModel('m', '1');
  const mqPath = encodeURIComponent(mq.name);
  assert.equal((await post(`${base}/api/queues/${mqPath}/pause`)).status, 404, 'not known yet');
  await queues.inference.register([mq.name]);
  const paused = await post(`${base}/api/queues/${mqPath}/pause`);
  assert.equal(paused.status, 200);
  assert.equal(await mq.isPaused(), true);
  await post(`${base}/api/queues/${mqPath}/resume`);
  assert.equal(await mq.isPaused(), false);
  assert.equal((await post(`${base}/api/queues/nope/pause`)).status, 404);
  assert.equal((await post(`${base}/api/queues/inference.nope@1/pause`)).status, 404);

  // Reprocess: a study-complete job for the study, due now.
  const reprocess = await post(`${base}/api/studies/${STUDY_A}/reprocess`);
  assert.equal(reprocess.status, 202);
  const pending = await queues.studyComplete.getJobs(['waiting', 'delayed', 'prioritized']);
  assert.ok(pending.some((j) => j.data.studyUid === STUDY_A));
  assert.equal((await post(`${base}/api/studies/1.2.3.4.5/reprocess`)).status, 404);

  // Cancel: pending jobs of the study go away and the study is marked failed, naming who cancelled.
  await queues.inference.add(inferenceJob(STUDY_A, 7), {
    jobId: jobId.inference(inferenceJob(STUDY_A, 7)),
  });
  const cancelled = await post(`${base}/api/studies/${STUDY_A}/cancel`);
  assert.equal(cancelled.status, 200);
  assert.ok(
    (cancelled.body.removed as string[]).includes(`${mq.name}/${jobId.inference(inferenceJob(STUDY_A, 7))}`),
  );
  assert.equal(await mq.getJob(jobId.inference(inferenceJob(STUDY_A, 7))), undefined);
  assert.equal((await index.get(STUDY_A))!.state, 'failed');
  assert.equal((await index.get(STUDY_A))!.detail, 'cancelled by local');

  // Retry: a job that failed for good goes back to waiting.
  const data = inferenceJob(STUDY_B, 1);
  const id = jobId.inference(data);
  const worker = new Worker(
    mq.name,
    async () => {
      throw new UnrecoverableError('model crashed');
    },
    { connection: redis, prefix },
  );
  const failedOnce = new Promise<void>((resolve) => worker.once('failed', () => resolve()));
  await queues.inference.add(data, { jobId: id });
  await failedOnce;
  await worker.close();
  const failedJobs = (await (await fetch(`${base}/api/queues/${mqPath}/jobs?state=failed`)).json()) as {
    id: string;
    failedReason: string;
  }[];
  assert.equal(failedJobs.find((j) => j.id === id)?.failedReason, 'model crashed');
  const retried = await post(`${base}/api/queues/${mqPath}/jobs/${encodeURIComponent(id)}/retry`);
  assert.equal(retried.status, 200, JSON.stringify(retried.body));
  assert.equal(await (await mq.getJob(id))!.getState(), 'waiting');
  const again = await post(`${base}/api/queues/${mqPath}/jobs/${encodeURIComponent(id)}/retry`);
  assert.equal(again.status, 409, 'only failed jobs can be retried');
  const removed = await post(`${base}/api/queues/${mqPath}/jobs/${encodeURIComponent(id)}/cancel`);
  assert.equal(removed.status, 200);
  assert.equal(await mq.getJob(id), undefined);

  const actions = (await (await fetch(`${base}/api/audit?type=action`)).json()) as (AuditRecord & {
    action: string;
    actor: string;
    result: string;
    target: string;
  })[];
  const summary = actions.map((a) => `${a.actor} ${a.action} ${a.target} ${a.result}`);
  for (const expected of [
    `local pause-queue ${mq.name} ok`,
    `local resume-queue ${mq.name} ok`,
    'local pause-queue nope refused',
    `local reprocess ${STUDY_A} ok`,
    `local cancel-study ${STUDY_A} ok`,
    `local retry-job ${mq.name}/${id} ok`,
    `local retry-job ${mq.name}/${id} refused`,
    `local cancel-job ${mq.name}/${id} ok`,
  ])
    assert.ok(summary.includes(expected), `audit has "${expected}" (have:\n${summary.join('\n')})`);
});

test('workers, destinations and associations come from the records other roles write, parsed defensively', async () => {
  const now = Date.now();
  await redis.hset(keys.workers(prefix), {
    'gpu-1': JSON.stringify({
      workerId: 'gpu-1',
      host: 'node7',
      pid: 42,
      gpu: 'NVIDIA H200',
      providers: { m: 'cuda' },
      models: ['m@1'],
      concurrency: 4,
      jobsProcessed: 120,
      imagesProcessed: 900,
      startedAt: now - 60 * 60_000,
      lastHeartbeat: now - 1000,
    }),
    'old-1': JSON.stringify({ workerId: 'old-1', host: 'node8', pid: 1, lastHeartbeat: now - 10 * 60_000 }),
    garbage: '{not json',
  });
  const workers = (await (await fetch(`${base}/api/workers`)).json()) as {
    workerId: string;
    alive: boolean;
    jobsPerMinute: number;
    gpu: string;
  }[];
  assert.deepEqual(
    workers.map((w) => [w.workerId, w.alive]),
    [
      ['gpu-1', true],
      ['old-1', false],
    ],
  );
  assert.equal(workers[0]!.gpu, 'NVIDIA H200');
  assert.equal(workers[0]!.jobsPerMinute, 2);

  await redis.hset(keys.destinations(prefix), {
    'local-folder': JSON.stringify({
      name: 'local-folder',
      kind: 'folder',
      breaker: 'open',
      consecutiveFailures: 5,
      lastError: 'disk full',
      lastErrorAt: now,
    }),
  });
  await queues.delivery.add(
    'deliver',
    { studyUid: STUDY_B, sopInstanceUid: '1.2.3.9', destination: 'local-folder' },
    { jobId: jobId.delivery('1.2.3.9', 'local-folder'), delay: 60_000 },
  );
  const dests = (await (await fetch(`${base}/api/destinations`)).json()) as {
    name: string;
    health: string;
    backlog: number;
    status: { lastError: string };
  }[];
  const local = dests.find((d) => d.name === 'local-folder')!;
  assert.equal(local.health, 'failing');
  assert.equal(local.backlog, 1);
  assert.equal(local.status.lastError, 'disk full');

  await redis.lpush(
    keys.associations(prefix),
    'garbage',
    JSON.stringify({
      callingAe: 'CT_SCANNER',
      calledAe: 'AIGATEWAY',
      address: '10.0.0.5',
      startedAt: now,
      durationMs: 1200,
      stored: 28,
      failed: 0,
      result: 'accepted',
    }),
  );
  const assocs = (await (await fetch(`${base}/api/associations`)).json()) as {
    callingAe: string;
    stored: number;
  }[];
  assert.deepEqual(
    assocs.map((a) => [a.callingAe, a.stored]),
    [['CT_SCANNER', 28]],
  );
});

test('audit export as JSON and CSV, filtered by study and time', async () => {
  await audit.record({
    type: 'failed',
    studyUid: STUDY_B,
    stage: 'inference',
    reason: '=HYPERLINK("x") "quoted"',
    jobId: 'j1',
  });
  const from = new Date(Date.now() - 60_000).toISOString();
  const json = (await (
    await fetch(`${base}/api/audit?studyUid=${STUDY_B}&from=${from}`)
  ).json()) as AuditRecord[];
  assert.ok(json.length >= 1);
  assert.ok(json.every((r) => (r as { studyUid?: string }).studyUid === STUDY_B));
  const future = (await (
    await fetch(`${base}/api/audit?from=${Date.now() + 3_600_000}`)
  ).json()) as unknown[];
  assert.deepEqual(future, []);

  const res = await fetch(`${base}/api/audit?studyUid=${STUDY_B}&type=failed&format=csv`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/csv/);
  const lines = (await res.text()).trim().split('\r\n');
  assert.match(lines[0]!, /^at,type,studyUid,/);
  assert.equal(lines.length, 2);
  // Quotes doubled, and the formula neutralised for spreadsheets.
  assert.ok(lines[1]!.includes(`"'=HYPERLINK(""x"") ""quoted"""`), lines[1]);
  assert.equal((await fetch(`${base}/api/audit?format=xml`)).status, 400);
  assert.equal((await fetch(`${base}/api/audit?from=yesterday`)).status, 400);
});

/** A raw request, so the test controls the Host header as a DNS-rebinding page would. */
function rawRequest(url: string, method: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

test('hostile pages are refused: cross-site actions and DNS-rebinding host names', async () => {
  const host = new URL(base).host;
  assert.equal(
    await rawRequest(`${base}/api/studies`, 'GET', { host: `evil.example:${new URL(base).port}` }),
    403,
  );
  assert.equal(
    await rawRequest(`${base}/api/studies`, 'GET', { host: `localhost:${new URL(base).port}` }),
    200,
  );
  const csrf = await post(`${base}/api/queues/delivery/pause`, { origin: 'http://evil.example' });
  assert.equal(csrf.status, 403);
  assert.match(String(csrf.body.error), /cross-origin/);
  assert.equal(await queues.delivery.isPaused(), false);
  const sameSite = await post(`${base}/api/queues/delivery/pause`, { origin: `http://${host}` });
  assert.equal(sameSite.status, 200);
  await post(`${base}/api/queues/delivery/resume`);
});

describe('access control', () => {
  let authBase: string;
  before(async () => {
    authBase = await serve(
      config({
        http: {
          host: '0.0.0.0',
          auth: {
            basic: [{ user: 'nurse', password: 'correct horse', role: 'read' }],
            bearer: [
              { name: 'ops', token: ADMIN_TOKEN, role: 'admin' },
              { name: 'grafana', token: READ_TOKEN, role: 'read' },
            ],
          },
        },
      }),
    );
  });

  test('without credentials: probes answer, everything else is a 401', async () => {
    assert.equal((await fetch(`${authBase}/healthz`)).status, 200);
    for (const p of ['/api/studies', '/metrics', '/', '/admin/queues', '/api/openapi.json']) {
      const res = await fetch(`${authBase}${p}`);
      assert.equal(res.status, 401, p);
      assert.match(res.headers.get('www-authenticate') ?? '', /Basic/);
    }
    assert.equal(
      (
        await fetch(`${authBase}/api/studies`, {
          headers: { authorization: 'Bearer wrong-token-0123456789' },
        })
      ).status,
      401,
    );
    const badPassword = Buffer.from('nurse:wrong').toString('base64');
    assert.equal(
      (await fetch(`${authBase}/api/studies`, { headers: { authorization: `Basic ${badPassword}` } })).status,
      401,
    );
  });

  test('role read sees but cannot act; role admin acts, and the audit names them', async () => {
    const basic = { authorization: `Basic ${Buffer.from('nurse:correct horse').toString('base64')}` };
    assert.equal((await fetch(`${authBase}/api/studies`, { headers: basic })).status, 200);
    const who = (await (await fetch(`${authBase}/api/whoami`, { headers: basic })).json()) as {
      role: string;
    };
    assert.equal(who.role, 'read');
    const refused = await post(`${authBase}/api/queues/delivery/pause`, basic);
    assert.equal(refused.status, 403);
    const bullBoardAction = await fetch(`${authBase}/admin/queues/api/queues/delivery/pause`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${READ_TOKEN}` },
    });
    assert.equal(bullBoardAction.status, 403, 'bull-board actions need role admin too');
    assert.equal(await queues.delivery.isPaused(), false);

    const ok = await post(`${authBase}/api/queues/delivery/pause`, {
      authorization: `Bearer ${ADMIN_TOKEN}`,
    });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.actor, 'ops');
    assert.equal(await queues.delivery.isPaused(), true);
    await post(`${authBase}/api/queues/delivery/resume`, { authorization: `Bearer ${ADMIN_TOKEN}` });

    const actions = (await audit.query({ type: 'action' })) as (AuditRecord & {
      actor: string;
      result: string;
      action: string;
    })[];
    assert.ok(actions.some((a) => a.actor === 'nurse' && a.result === 'refused'));
    assert.ok(actions.some((a) => a.actor === 'grafana' && a.result === 'refused'));
    assert.ok(actions.some((a) => a.actor === 'ops' && a.action === 'pause-queue' && a.result === 'ok'));
  });

  test('a non-loopback admin listener without auth refuses to start', async () => {
    assert.ok(isLoopbackHost('127.0.0.1') && isLoopbackHost('::1') && isLoopbackHost('localhost'));
    assert.ok(!isLoopbackHost('0.0.0.0') && !isLoopbackHost('10.1.2.3') && !isLoopbackHost('::'));
    assert.throws(() => assertAuthForBinding(config({ http: { host: '0.0.0.0' } }).http), ConfigError);
    assert.doesNotThrow(() => assertAuthForBinding(config({ http: { host: '127.0.0.1' } }).http));
    assert.doesNotThrow(() =>
      assertAuthForBinding(
        config({
          http: { host: '0.0.0.0', auth: { bearer: [{ name: 'a', token: ADMIN_TOKEN, role: 'admin' }] } },
        }).http,
      ),
    );
    // Containers set one admin token through the environment.
    const fromEnv = loadConfig({ env: { GATEWAY_HTTP_HOST: '0.0.0.0', GATEWAY_ADMIN_TOKEN: ADMIN_TOKEN } });
    assert.doesNotThrow(() => assertAuthForBinding(fromEnv.http));
    assert.deepEqual(fromEnv.http.auth?.bearer, [{ name: 'env-admin', token: ADMIN_TOKEN, role: 'admin' }]);
    assert.throws(() => loadConfig({ env: { GATEWAY_ADMIN_TOKEN: 'short' } }), /http\.auth\.bearer/);
    // The real CLI: exits with the reason before opening any listener.
    const cfgPath = path.join(dir, 'open.yaml');
    await writeFile(
      cfgPath,
      stringify({ http: { host: '0.0.0.0', port: 0 }, redis: { url: REDIS_URL, prefix, autoStart: false } }),
    );
    const run = await runTool(
      process.execPath,
      ['--import', 'tsx', 'src/cli.ts', 'gateway', '--config', cfgPath],
      {
        cwd: REPO,
        timeoutMs: 30_000,
      },
    );
    assert.equal(run.code, 1);
    assert.match(run.stderr, /http\.auth/);
  });
});
