// Latency benchmark: "study complete → SR stored in the PACS". A real Orthanc is the PACS (DICOMweb
// destination), the gateway runs role `all` as a child process with the built-in image-uniformity model, and
// dcmtk storescu sends one synthetic 3-instance CT study at a time; the next study is sent once the previous
// one's SR is in the PACS, so each figure is one study's latency, not a queue's.
//
//   npm run bench:latency                 # 50 studies (+3 untimed warm-up studies)
//   npm run bench:latency -- --studies N  # another count
//
// What is measured, per study, from the gateway's own job timestamps (BullMQ, the gateway's clock, which is
// this machine's clock):
//   start  = the study-complete (routing) job's processedOn: the moment the completion fired. The quiet
//            period before it is not counted.
//   end    = the moment Orthanc has stored the SR: an Orthanc Lua OnStoredInstance callback posts it to this
//            bench's HTTP listener (no polling interval in the figure).
//   latency = end − start − the model's own run (the inference job's inferenceMs: decode, preprocessing and
//             the batched ONNX runs, as runModel times them).
// Also printed: the latency minus the whole inference job's processing time (finishedOn − processedOn), and
// the steps between (routing job, wait for a worker, the rest of the inference job, delivery).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { QUEUE } from '../../src/pipeline/jobs.ts';
import { keys } from '../../src/pipeline/keys.ts';
import { freePort, studyUidOf } from '../../tests/helpers/dicom-tools.ts';
import { makeModelsDir } from '../../tests/helpers/gateway.ts';
import { dcmtk } from '../../tests/helpers/ingest.ts';
import { startOrthanc, type OrthancInstance } from '../../tests/helpers/orthanc.ts';
import { synthesizeCtSeries } from '../ingest/synth.ts';
import { NODE_FLAGS } from '../../src/util/node-flags.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const studiesArg = process.argv.indexOf('--studies');
const STUDIES = studiesArg > 0 ? Number(process.argv[studiesArg + 1]) : 50;
const WARMUP = 3;
const INSTANCES_PER_STUDY = 3;
const QUIET_PERIOD_MS = 500;
const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const TARGET_P50_MS = 300;

interface Arrival {
  at: number;
  modality: string;
}

interface Sample {
  latencyMs: number;
  latencyJobMs: number;
  routeMs: number;
  inferenceMs: number;
  inferenceJobRestMs: number;
  deliveryMs: number;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/** Orthanc tells the bench the moment it has stored an instance (Lua, OnStoredInstance → HttpPost). */
async function startArrivalListener(): Promise<{
  port: number;
  waitFor(studyUid: string, timeoutMs: number): Promise<Arrival>;
  close(): Promise<void>;
}> {
  const arrivals = new Map<string, Arrival>();
  const waiters = new Map<string, (a: Arrival) => void>();
  const server = createServer((req, res) => {
    const at = Date.now();
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      res.end('ok');
      try {
        const { study, modality } = JSON.parse(body) as { study?: string; modality?: string };
        if (typeof study !== 'string' || modality !== 'SR') return;
        if (arrivals.has(study)) return; // the first SR of the study is the one measured
        const arrival = { at, modality };
        arrivals.set(study, arrival);
        waiters.get(study)?.(arrival);
      } catch {
        // not ours
      }
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    port,
    waitFor(studyUid, timeoutMs) {
      const known = arrivals.get(studyUid);
      if (known) return Promise.resolve(known);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(studyUid);
          reject(new Error(`no SR for study ${studyUid} in the PACS after ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.set(studyUid, (a) => {
          clearTimeout(timer);
          waiters.delete(studyUid);
          resolve(a);
        });
      });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function startGateway(
  dir: string,
  orthanc: OrthancInstance,
): Promise<{ dimsePort: number; prefix: string; logPath: string; stop(): Promise<void> }> {
  const dimsePort = await freePort();
  const httpPort = await freePort();
  const prefix = `aigw-bench-lat-${randomBytes(4).toString('hex')}`;
  const configPath = path.join(dir, 'gateway.yaml');
  await writeFile(
    configPath,
    stringify({
      dimse: { aeTitle: 'AIGATEWAY', host: '127.0.0.1', port: dimsePort, peers: [{ aeTitle: 'BENCH' }] },
      http: { host: '127.0.0.1', port: httpPort },
      redis: { url: REDIS_URL, prefix, autoStart: false },
      dataDir: path.join(dir, 'data'),
      modelsDir: await makeModelsDir(['uniformity']),
      study: { quietPeriodMs: QUIET_PERIOD_MS },
      destinations: { pacs: { kind: 'dicomweb', url: orthanc.dicomwebUrl } },
      defaultDestination: 'pacs',
    }),
  );
  const logPath = path.join(dir, 'gateway.log');
  const log = createWriteStream(logPath);
  const child: ChildProcess = spawn(
    process.execPath,
    [...NODE_FLAGS, '--import', 'tsx', path.join(REPO, 'src/cli.ts'), 'all', '--config', configPath],
    { cwd: REPO, env: { ...process.env, LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || Date.now() > deadline) {
      const tail = (await readFile(logPath, 'utf8').catch(() => '')).slice(-3000);
      child.kill('SIGKILL');
      throw new Error(`gateway did not become ready:\n${tail}`);
    }
    const ok = await fetch(`http://127.0.0.1:${httpPort}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    dimsePort,
    prefix,
    logPath,
    async stop() {
      if (child.exitCode === null) {
        await new Promise<void>((resolve) => {
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
        });
      }
      const redis = new Redis(REDIS_URL);
      const stale = await redis.keys(`${prefix}:*`);
      if (stale.length > 0) await redis.del(...stale);
      redis.disconnect();
    },
  };
}

interface JobTimes {
  processedOn?: number;
  finishedOn?: number;
  returnvalue?: unknown;
}

/** The study's jobs, from the per-study job set the gateway's queues keep. */
async function studyJobs(
  redis: Redis,
  queues: Map<string, Queue>,
  prefix: string,
  studyUid: string,
): Promise<Map<string, JobTimes[]>> {
  const out = new Map<string, JobTimes[]>();
  for (const entry of await redis.smembers(keys.studyJobs(prefix, studyUid))) {
    const slash = entry.indexOf('/');
    const name = entry.slice(0, slash);
    // Inference jobs live in their model's queue (inference.<id>@<version>); they count as the inference stage.
    const perModel = name.startsWith(`${QUEUE.inference}.`);
    if (perModel && !queues.has(name)) queues.set(name, new Queue(name, { connection: redis, prefix }));
    const queue = queues.get(name);
    const job = queue ? await queue.getJob(entry.slice(slash + 1)) : undefined;
    if (!job) continue;
    const stage = perModel ? QUEUE.inference : name;
    const list = out.get(stage) ?? [];
    list.push({ processedOn: job.processedOn, finishedOn: job.finishedOn, returnvalue: job.returnvalue });
    out.set(stage, list);
  }
  return out;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-bench-latency-'));
  const listener = await startArrivalListener();
  let orthanc: OrthancInstance | undefined;
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
  const redis = new Redis(REDIS_URL);
  const queues = new Map<string, Queue>();
  try {
    const lua = path.join(dir, 'arrival.lua');
    await writeFile(
      lua,
      `function OnStoredInstance(instanceId, tags, metadata, origin)
  HttpPost('http://127.0.0.1:${listener.port}/stored', DumpJson({ study = tags['StudyInstanceUID'], modality = tags['Modality'] }, true))
end
`,
    );
    orthanc = await startOrthanc({ extraConfig: { LuaScripts: [lua] } });
    gateway = await startGateway(dir, orthanc);
    for (const name of Object.values(QUEUE)) {
      queues.set(name, new Queue(name, { connection: redis, prefix: gateway.prefix }));
    }
    console.log(
      `${WARMUP} warm-up + ${STUDIES} timed studies of ${INSTANCES_PER_STUDY} CT instances, one at a time; ` +
        `quiet period ${QUIET_PERIOD_MS} ms (not counted); model image-uniformity; PACS Orthanc (DICOMweb)`,
    );
    const samples: Sample[] = [];
    for (let i = 0; i < WARMUP + STUDIES; i++) {
      const files = await synthesizeCtSeries({
        dir: path.join(dir, `study-${i}`),
        instances: INSTANCES_PER_STUDY,
      });
      const studyUid = studyUidOf(files[0]!);
      const sent = await dcmtk('storescu', [
        '-aet',
        'BENCH',
        '-aec',
        'AIGATEWAY',
        '127.0.0.1',
        String(gateway.dimsePort),
        ...files,
      ]);
      if (sent.code !== 0) throw new Error(`storescu failed:\n${sent.out}`);
      const arrival = await listener.waitFor(studyUid, 60_000);
      // The inference job's last steps (index, audit) may finish just after the SR arrived.
      let jobs = await studyJobs(redis, queues, gateway.prefix, studyUid);
      for (let t = 0; t < 50 && !jobs.get(QUEUE.inference)?.[0]?.finishedOn; t++) {
        await new Promise((r) => setTimeout(r, 100));
        jobs = await studyJobs(redis, queues, gateway.prefix, studyUid);
      }
      const complete = jobs.get(QUEUE.studyComplete) ?? [];
      const inference = jobs.get(QUEUE.inference) ?? [];
      const delivery = jobs.get(QUEUE.delivery) ?? [];
      if (complete.length !== 1 || inference.length !== 1 || delivery.length !== 1) {
        throw new Error(
          `study ${i}: expected one job per stage, got ${complete.length}/${inference.length}/${delivery.length}`,
        );
      }
      const c = complete[0]!;
      const inf = inference[0]!;
      const d = delivery[0]!;
      const modelMs = (inf.returnvalue as { inferenceMs?: unknown } | undefined)?.inferenceMs;
      if (
        typeof modelMs !== 'number' ||
        c.processedOn === undefined ||
        inf.processedOn === undefined ||
        inf.finishedOn === undefined ||
        d.processedOn === undefined
      ) {
        throw new Error(`study ${i}: job timestamps missing: ${JSON.stringify({ c, inf, d })}`);
      }
      if (i < WARMUP) continue;
      const total = arrival.at - c.processedOn;
      samples.push({
        latencyMs: total - modelMs,
        latencyJobMs: total - (inf.finishedOn - inf.processedOn),
        routeMs: inf.processedOn - c.processedOn,
        inferenceMs: modelMs,
        inferenceJobRestMs: d.processedOn - inf.processedOn - modelMs,
        deliveryMs: arrival.at - d.processedOn,
      });
      await rm(path.join(dir, `study-${i}`), { recursive: true, force: true });
    }

    const row = (label: string, pick: (s: Sample) => number) => {
      const v = samples.map(pick);
      console.log(
        `| ${label} | ${percentile(v, 50).toFixed(0)} | ${percentile(v, 95).toFixed(0)} | ${Math.max(...v).toFixed(0)} |`,
      );
    };
    console.log('\n| step (ms, per study) | p50 | p95 | max |');
    console.log('| --- | ---: | ---: | ---: |');
    row('**study complete → SR stored in the PACS, less the model run**', (s) => s.latencyMs);
    row('same, less the whole inference job instead', (s) => s.latencyJobMs);
    row('completion fired → inference job starts (routing job, queue)', (s) => s.routeMs);
    row('model run (excluded)', (s) => s.inferenceMs);
    row(
      'inference job start → delivery job starts, less the model run (load, SR write, queue)',
      (s) => s.inferenceJobRestMs,
    );
    row('delivery job start → Orthanc has stored the SR (STOW-RS)', (s) => s.deliveryMs);
    const p50 = percentile(
      samples.map((s) => s.latencyMs),
      50,
    );
    console.log(
      `\n${samples.length} studies: p50 ${p50.toFixed(0)} ms, p95 ${percentile(
        samples.map((s) => s.latencyMs),
        95,
      ).toFixed(0)} ms (target p50 < ${TARGET_P50_MS} ms): ${p50 < TARGET_P50_MS ? 'OK' : 'OVER'}`,
    );
  } finally {
    for (const q of queues.values()) await q.close().catch(() => undefined);
    redis.disconnect();
    await gateway?.stop().catch(() => undefined);
    await orthanc?.stop().catch(() => undefined);
    await listener.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
