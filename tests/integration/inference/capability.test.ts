// Workers by capability, with real processes on a real Redis: a gateway (role gateway) routes a chest
// radiograph to two models; a worker that has only the uniformity model takes only that model's job, while
// the chest model's job waits, visibly ("no worker for model …" in /readyz, the console and the metrics),
// using no attempt; a second worker that has the chest model then takes it and the study completes. A
// worker whose data directory is replaced by a file (a storage fault root feels too) is not ready, is not
// counted for its model, and takes no job until the directory is back.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { inferenceQueueName, jobId, QUEUE, type InferenceJob } from '../../../src/pipeline/jobs.ts';
import { InferenceQueues } from '../../../src/pipeline/queues.ts';
import { keys, type WorkerHeartbeat } from '../../../src/pipeline/keys.ts';
import {
  makeModelsDir,
  REDIS_URL,
  SHARED,
  startGateway,
  waitFor,
  type GatewayProcess,
} from '../../helpers/gateway.ts';

const FUJI_CHEST = path.join(SHARED, 'dicom-samples/xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const CT = path.join(
  SHARED,
  'dicom-samples/compressed/same-ct-image/ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm',
);
const UNIFORMITY = 'image-uniformity@1.0.0';
const CXR = 'squeezenet1_1-cxr-pneumonia@1.0.0';

const prefix = `aigw-cap-${randomBytes(4).toString('hex')}`;
const shared = { redis: { prefix } };
let redis: Redis;
let queues: InferenceQueues;
let gateway: GatewayProcess;
let uniformityWorker: GatewayProcess;
let cxrWorker: GatewayProcess | undefined;

interface Readyz {
  status: string;
  checks: Record<string, { ok: boolean; reason: string }>;
  warnings: string[];
  models?: { model: string; pending: number; workers: number; problem?: string }[];
}

async function readyz(g: GatewayProcess): Promise<{ status: number; body: Readyz }> {
  const res = await fetch(`http://127.0.0.1:${g.httpPort}/readyz`);
  return { status: res.status, body: (await res.json()) as Readyz };
}

async function metric(series: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${gateway.httpPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function heartbeats(): Promise<WorkerHeartbeat[]> {
  return Object.values(await redis.hgetall(keys.workers(prefix))).map(
    (v) => JSON.parse(v) as WorkerHeartbeat,
  );
}

/** Waits until `cond` holds (waitFor takes any defined value). */
const until = (what: string, cond: () => Promise<boolean>, ms = 60_000) =>
  waitFor(what, async () => ((await cond()) ? true : undefined), ms);

/**
 * The workers read what the gateway stored: on one host, the gateway's filesystem store. Each worker gets a
 * link of its own to the gateway's data directory, so that a test can take one worker's storage away
 * (replace its link by a file) and leave the gateway's alone.
 */
const links: string[] = [];
async function linkToGatewayData(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-cap-link-'));
  links.push(dir);
  const link = path.join(dir, 'data');
  await symlink(gateway.dataDir, link);
  return link;
}

before(async () => {
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  queues = new InferenceQueues(redis, prefix);
  gateway = await startGateway({
    modelsDir: await makeModelsDir(['cxr', 'uniformity']),
    role: 'gateway',
    config: { ...shared, study: { quietPeriodMs: 500 } },
  });
  uniformityWorker = await startGateway({
    modelsDir: await makeModelsDir(['uniformity']),
    role: 'worker',
    config: { ...shared, dataDir: await linkToGatewayData() },
  });
});

after(async () => {
  await cxrWorker?.dispose();
  await uniformityWorker?.dispose();
  await gateway?.dispose();
  for (const dir of links) await rm(dir, { recursive: true, force: true });
  await queues?.close();
  redis?.disconnect();
});

test('each worker takes only its models’ jobs; a job without a worker waits visibly and uses no attempt', async () => {
  // The worker published its model (id@version) and registered its queue before any job.
  const [beat] = await heartbeats();
  assert.deepEqual(beat!.models, [UNIFORMITY]);
  assert.equal(beat!.accepting, true);
  assert.ok((await queues.known()).some((q) => q.name === inferenceQueueName('image-uniformity', '1.0.0')));

  const stored = await gateway.store([FUJI_CHEST]);
  assert.equal(stored.code, 0, stored.stderr);
  const studyUid = (await gateway.api<{ studyUid: string }[]>('/api/studies'))[0]!.studyUid;
  const run = 1;
  const uniformityId = jobId.inference({ studyUid, modelId: 'image-uniformity', modelVersion: '1.0.0', run });
  const cxrId = jobId.inference({
    studyUid,
    modelId: 'squeezenet1_1-cxr-pneumonia',
    modelVersion: '1.0.0',
    run,
  });
  const uniformityQueue = queues.forModel('image-uniformity', '1.0.0');
  const cxrQueue = queues.forModel('squeezenet1_1-cxr-pneumonia', '1.0.0');

  // The uniformity job runs on the worker that has the model.
  await until(
    'the uniformity job to complete',
    async () => (await uniformityQueue.getJobState(uniformityId)) === 'completed',
  );
  const cxrJob = (await cxrQueue.getJob(cxrId))!;
  assert.ok(cxrJob, 'the chest job is in its own model queue');
  // The chest job waits: no worker has its model. A few heartbeats later it still has every attempt.
  await new Promise((r) => setTimeout(r, 3000));
  assert.match(await cxrQueue.getJobState(cxrId), /^(waiting|prioritized)$/);
  assert.equal((await cxrQueue.getJob(cxrId))!.attemptsMade, 0);

  // /readyz: the gateway stays ready; the models check and a warning say which model lacks a worker.
  const ready = await readyz(gateway);
  assert.equal(ready.status, 200);
  assert.equal(ready.body.checks.models!.ok, false);
  assert.match(
    ready.body.checks.models!.reason,
    new RegExp(`no worker for model ${CXR} \\(1 job\\(s\\) waiting\\)`),
  );
  assert.ok(
    ready.body.warnings.includes(`models: no worker for model ${CXR} (1 job(s) waiting)`),
    ready.body.warnings.join('; '),
  );
  const byModel = new Map(ready.body.models!.map((m) => [m.model, [m.workers, m.pending, m.problem]]));
  assert.deepEqual(byModel.get(CXR), [0, 1, `no worker for model ${CXR}`]);
  assert.deepEqual(byModel.get(UNIFORMITY), [1, 0, undefined]);
  // The console: the overview, the study page (the job marked) and the worklist row.
  const overview = await gateway.api<{ models: { model: string; problem?: string }[] }>('/api/overview');
  assert.equal(overview.models.find((m) => m.model === CXR)?.problem, `no worker for model ${CXR}`);
  const page = await gateway.api<{ waitingFor: string[]; jobs: { id: string; blocked?: string }[] }>(
    `/api/studies/${studyUid}`,
  );
  assert.deepEqual(page.waitingFor, [`no worker for model ${CXR}`]);
  assert.equal(page.jobs.find((j) => j.id === cxrId)?.blocked, `no worker for model ${CXR}`);
  assert.equal(page.jobs.find((j) => j.id === uniformityId)?.blocked, undefined);
  const list = await gateway.api<{ rows: { studyUid: string; waitingFor?: string[] }[] }>('/api/worklist');
  assert.deepEqual(list.rows.find((r) => r.studyUid === studyUid)?.waitingFor, [
    `no worker for model ${CXR}`,
  ]);
  // The metrics the alert reads.
  assert.equal(await metric(`aigw_inference_model_workers{model="${CXR}"}`), 0);
  assert.equal(await metric(`aigw_inference_model_jobs_pending{model="${CXR}"}`), 1);
  assert.equal(await metric(`aigw_inference_model_workers{model="${UNIFORMITY}"}`), 1);

  // The gateway's log says it too, once.
  const logged = () => readFile(gateway.logPath, 'utf8');
  await until(
    'the log line',
    async () => (await logged()).includes('"event":"admin.models.no_worker"'),
    20_000,
  );
  const line = (await logged()).split('\n').find((l) => l.includes('"event":"admin.models.no_worker"'))!;
  assert.equal(JSON.parse(line).msg, `no worker for model ${CXR}`);
  assert.equal(JSON.parse(line).model, CXR);

  // A worker with the chest model starts: it takes the waiting job, which completes on its first attempt.
  cxrWorker = await startGateway({
    modelsDir: await makeModelsDir(['cxr']),
    role: 'worker',
    config: { ...shared, dataDir: await linkToGatewayData() },
  });
  await until(
    'the chest job to complete',
    async () => (await cxrQueue.getJobState(cxrId)) === 'completed',
    90_000,
  );
  assert.equal((await cxrQueue.getJob(cxrId))!.attemptsMade, 1);
  assert.equal((await uniformityQueue.getJob(uniformityId))!.attemptsMade, 1);
  // Each worker ran one job: its own model's.
  const beats = await heartbeats();
  const byModels = Object.fromEntries(beats.map((b) => [b.models.join(','), b.jobsProcessed]));
  await until(
    'the heartbeats to count the jobs',
    async () => {
      const now = Object.fromEntries((await heartbeats()).map((b) => [b.models.join(','), b.jobsProcessed]));
      Object.assign(byModels, now);
      return now[CXR] === 1;
    },
    15_000,
  );
  assert.deepEqual(byModels, { [UNIFORMITY]: 1, [CXR]: 1 });
  // Nothing failed anywhere: no job went to a worker without its model.
  assert.equal((await uniformityQueue.getFailedCount()) + (await cxrQueue.getFailedCount()), 0);
  await until('the study to be done', async () => {
    const s = await gateway.api<{ state: string }>(`/api/studies/${studyUid}`);
    return s.state === 'done';
  }).catch(async (err: unknown) => {
    // Once seen in a full suite run and never alone: say what the study and the gateway were doing.
    const s = await gateway.api<unknown>(`/api/studies/${studyUid}`).catch((e: unknown) => e);
    const log = (await logged()).split('\n').slice(-40).join('\n');
    throw new Error(`${String(err)}\nstudy: ${JSON.stringify(s)}\ngateway log (last 40 lines):\n${log}`);
  });
  await until(
    'the log to say the model has a worker again',
    async () => (await logged()).includes('"event":"admin.models.worker_back"'),
    20_000,
  );
  const after = await readyz(gateway);
  assert.equal(after.body.checks.models!.ok, true);
  assert.ok(!after.body.warnings.some((w) => w.startsWith('models:')));
});

test('a worker whose storage is unreachable is not ready, is not counted, and takes no job until it is back', async () => {
  const data = uniformityWorker.dataDir;
  await rename(data, `${data}.away`);
  await writeFile(data, 'the data directory replaced by a file');
  try {
    await until(
      'the worker to be unready',
      async () => (await readyz(uniformityWorker)).status === 503,
      30_000,
    );
    const unready = await readyz(uniformityWorker);
    assert.equal(unready.body.checks.storage!.ok, false);
    assert.match(unready.body.checks.storage!.reason, /^storage unreachable: .*ENOTDIR/);
    assert.equal(unready.body.checks.worker!.ok, false);
    await until('the heartbeat to say it takes no jobs', async () =>
      (await heartbeats()).some((b) => b.models.includes(UNIFORMITY) && b.accepting === false),
    );

    // A CT study: only the uniformity model reads it. Its job waits; the gateway says no worker has it.
    assert.equal((await gateway.store([CT])).code, 0);
    const ct = await waitFor('the CT study to be routed', async () => {
      const rows =
        await gateway.api<{ studyUid: string; modalities: string[]; state: string }[]>('/api/studies');
      return rows.find((r) => r.modalities.includes('CT') && r.state !== 'receiving');
    });
    const id = jobId.inference({
      studyUid: ct.studyUid,
      modelId: 'image-uniformity',
      modelVersion: '1.0.0',
      run: 1,
    });
    const queue = queues.forModel('image-uniformity', '1.0.0');
    await until('the job to be queued', async () => (await queue.getJob(id)) !== undefined);
    await new Promise((r) => setTimeout(r, 3000));
    assert.match(await queue.getJobState(id), /^(waiting|prioritized|delayed)$/);
    assert.equal((await queue.getJob(id))!.attemptsMade, 0);
    const ready = await readyz(gateway);
    assert.ok(
      ready.body.warnings.includes(`models: no worker for model ${UNIFORMITY} (1 job(s) waiting)`),
      ready.body.warnings.join('; '),
    );
  } finally {
    await rm(data, { force: true });
    await rename(`${data}.away`, data);
  }
  await until(
    'the worker to be ready again',
    async () => (await readyz(uniformityWorker)).status === 200,
    30_000,
  );
  const rows = await gateway.api<{ studyUid: string; modalities: string[] }[]>('/api/studies');
  const ct = rows.find((r) => r.modalities.includes('CT'))!;
  await until(
    'the CT study to be done',
    async () => {
      const s = await gateway.api<{ state: string }>(`/api/studies/${ct.studyUid}`);
      return s.state === 'done';
    },
    60_000,
  );
  const id = jobId.inference({
    studyUid: ct.studyUid,
    modelId: 'image-uniformity',
    modelVersion: '1.0.0',
    run: 1,
  });
  assert.equal((await queues.forModel('image-uniformity', '1.0.0').getJob(id))!.attemptsMade, 1);
});

test('jobs an older version left in the single inference queue are forwarded to their model queues and run', async () => {
  // The chest study of the first test, as an older gateway would have queued a new run of it.
  const rows = await gateway.api<{ studyUid: string; modalities: string[] }[]>('/api/studies');
  const studyUid = rows.find((r) => r.modalities.includes('CR'))!.studyUid;
  const legacy = new Queue<InferenceJob>(QUEUE.inference, { connection: redis, prefix });
  try {
    const added: { id: string; model: [string, string] }[] = [];
    for (const [modelId, modelVersion] of [
      ['image-uniformity', '1.0.0'],
      ['squeezenet1_1-cxr-pneumonia', '1.0.0'],
    ] as const) {
      const data: InferenceJob = {
        studyUid,
        seriesUids: (
          await gateway.api<{ series: { seriesUid: string }[] }>(`/api/studies/${studyUid}`)
        ).series.map((s) => s.seriesUid),
        modelId,
        modelVersion,
        destinations: [],
        priority: 10,
        run: 7,
      };
      const id = jobId.inference(data);
      await legacy.add('infer', data, { jobId: id, priority: 10, attempts: 3 });
      added.push({ id, model: [modelId, modelVersion] });
    }
    for (const { id, model } of added) {
      const queue = queues.forModel(...model);
      await until(`${id} to run in ${queue.name}`, async () => (await queue.getJobState(id)) === 'completed');
      assert.equal((await queue.getJob(id))!.attemptsMade, 1);
      const forwarded = (await legacy.getJob(id))!;
      assert.equal(await forwarded.getState(), 'completed');
      assert.deepEqual(forwarded.returnvalue, { forwardedTo: queue.name });
    }
    assert.equal(await legacy.getFailedCount(), 0);
  } finally {
    await legacy.close();
  }
});
