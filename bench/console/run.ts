// Console benchmark: N studies (default 10,000) in a real Redis, the admin app over HTTP, and the study
// list's requests timed as the console makes them: the first page, each filter, a sort, a deep page, one
// study page. Prints p50/p95/max per request and fails (exit 1) when any p95 is over the target.
//
//   npx tsx bench/console/run.ts                 # 10,000 studies, 100 ms target
//   npx tsx bench/console/run.ts --studies 2000 --rounds 10
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { createAdminApp, listen } from '../../src/admin/app.ts';
import { configSchema } from '../../src/config/schema.ts';
import { destinationSummaries } from '../../src/delivery/registry.ts';
import { createQueues } from '../../src/pipeline/queues.ts';
import { StudyIndex, type ReportFindings } from '../../src/pipeline/study-index.ts';
import { FilesystemObjectStore } from '../../src/storage/filesystem-store.ts';

const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const TARGET_MS = 100;

const MODALITIES = ['CR', 'DX', 'CT', 'MR'];
const AES = ['ER_XRAY', 'CT_SCANNER', 'MR_3T', 'WARD_DX', 'PACS'];
const STATES = ['done', 'done', 'done', 'no-model', 'failed', 'queued'] as const;

/** Seeds `n` studies (1-3 series, 1-4 instances each; findings on most) under `prefix`. */
export async function seedStudies(redis: Redis, prefix: string, n: number): Promise<string[]> {
  const index = new StudyIndex(redis, prefix);
  const uids: string[] = [];
  const t0 = Date.now() - n * 1000;
  const batch = 500;
  for (let start = 0; start < n; start += batch) {
    const work: Promise<unknown>[] = [];
    for (let i = start; i < Math.min(n, start + batch); i++) {
      const studyUid = `2.25.${1000 + i}.${i * 7919}`;
      uids.push(studyUid);
      const modality = MODALITIES[i % MODALITIES.length]!;
      const series = 1 + (i % 3);
      work.push(
        (async () => {
          for (let s = 0; s < series; s++)
            for (let k = 0; k < 1 + ((i + s) % 4); k++)
              await index.recordInstance({
                studyUid,
                seriesUid: `${studyUid}.${s + 1}`,
                sopInstanceUid: `${studyUid}.${s + 1}.${k + 1}`,
                sopClassUid: '1.2.840.10008.5.1.4.1.1.1',
                transferSyntaxUid: '1.2.840.10008.1.2.1',
                modality,
                studyDescription: `${modality} study ${i % 50}`,
                size: 1000,
                callingAe: AES[i % AES.length]!,
                callingAddress: '127.0.0.1',
                receivedAt: t0 + i * 1000,
                identity: {
                  accessionNumber: `ACC${i}`,
                  patientId: `PID${i % 977}`,
                  patientName: `Doe^P${i}`,
                },
              });
          const state = STATES[i % STATES.length]!;
          await index.setState(studyUid, state);
          if (state === 'done') {
            const p = ((i * 37) % 100) / 100;
            const f: ReportFindings = {
              model: i % 2 ? 'image-uniformity' : 'squeezenet1_1-cxr-pneumonia',
              version: '1.0.0',
              run: 1,
              srUid: `${studyUid}.9000.1`,
              rows: [{ meaning: 'Quality Issue', probability: p, presence: p >= 0.5 ? 'Present' : 'Absent' }],
              positive: p >= 0.5,
            };
            f.top = f.rows[0];
            await index.setReportFindings(studyUid, f);
          }
        })(),
      );
    }
    await Promise.all(work);
  }
  return uids;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export interface BenchLine {
  request: string;
  p50: number;
  p95: number;
  max: number;
  total: number;
}

/** Times each console request `rounds` times against the app at `base`. */
export async function timeRequests(base: string, sample: string, rounds: number): Promise<BenchLine[]> {
  const requests = [
    '/api/worklist?limit=50',
    '/api/worklist?limit=50&state=failed',
    '/api/worklist?limit=50&modality=CR&positive=true',
    '/api/worklist?limit=50&ae=ER_XRAY&model=image-uniformity',
    '/api/worklist?limit=50&sort=finding&dir=desc',
    '/api/worklist?limit=50&sort=description&dir=asc&offset=5000',
    '/api/worklist?limit=50&q=study%2042',
    '/api/overview',
    `/api/studies/${sample}`,
  ];
  const out: BenchLine[] = [];
  for (const r of requests) {
    const cold = performance.now();
    await fetch(base + r).then((x) => x.arrayBuffer()); // warm (the first list request loads the cache)
    if (out.length === 0)
      console.log(
        `first list request (loads every study into the cache): ${Math.round(performance.now() - cold)} ms`,
      );
    const times: number[] = [];
    let total = 0;
    for (let i = 0; i < rounds; i++) {
      const t = performance.now();
      const res = await fetch(base + r);
      const body = (await res.json()) as { total?: number };
      times.push(performance.now() - t);
      if (!res.ok) throw new Error(`${r}: HTTP ${res.status}`);
      total = body.total ?? 1;
    }
    times.sort((a, b) => a - b);
    const round = (x: number) => Math.round(x * 10) / 10;
    out.push({
      request: r,
      p50: round(percentile(times, 50)),
      p95: round(percentile(times, 95)),
      max: round(times.at(-1)!),
      total,
    });
  }
  return out;
}

/** Seeds, serves and times; cleans up its keys. */
export async function runConsoleBench(studies: number, rounds: number): Promise<BenchLine[]> {
  const prefix = `aigw-bench-console-${randomBytes(4).toString('hex')}`;
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-bench-console-'));
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const config = configSchema.parse({ redis: { url: REDIS_URL, prefix, autoStart: false }, dataDir: dir });
  const queues = createQueues(redis, config);
  let server: Server | undefined;
  try {
    const uids = await seedStudies(redis, prefix, studies);
    const app = createAdminApp({
      config,
      redis,
      index: new StudyIndex(redis, prefix),
      queues,
      spoolDir: dir,
      store: new FilesystemObjectStore(dir),
      destinations: destinationSummaries(config),
    });
    server = await listen(app, '127.0.0.1', 0);
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    return await timeRequests(base, uids[Math.floor(uids.length / 2)]!, rounds);
  } finally {
    if (server) await new Promise((r) => server!.close(r));
    await queues.close();
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (found.length) await redis.unlink(...found);
    } while (cursor !== '0');
    redis.disconnect();
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const arg = (name: string, def: number) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? Number(process.argv[i + 1]) : def;
  };
  const studies = arg('--studies', 10_000);
  const rounds = arg('--rounds', 20);
  const lines = await runConsoleBench(studies, rounds);
  console.log(
    `console with ${studies} studies in Redis, ${rounds} requests each (target p95 < ${TARGET_MS} ms)`,
  );
  console.log('| request | matches | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|');
  for (const l of lines) console.log(`| ${l.request} | ${l.total} | ${l.p50} | ${l.p95} | ${l.max} |`);
  const over = lines.filter((l) => l.p95 >= TARGET_MS);
  if (over.length) {
    console.error(`over target: ${over.map((l) => l.request).join(', ')}`);
    process.exit(1);
  }
  process.exit(0);
}
