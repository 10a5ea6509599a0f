// Redis load per instance and per study, for sizing a site or a network (docs/scale-out.md): a real gateway
// (role all, the built-in image-uniformity model, the local folder destination) on a private redis-server,
// so INFO commandstats holds nothing but this gateway's commands.
//
//   npx tsx bench/scale/redis-commands.ts [--studies S] [--instances N]
//
// 1. idle: commands per second of a running gateway with nothing to do (BullMQ workers' blocking waits,
//    heartbeats, the reconciler), measured over 10 s, subtracted below.
// 2. ingest: S studies of N 128×128 CT instances, one storescu association per study, at most 4 at once; commands until the
//    last C-STORE is answered, per instance; and the ingest rate of this one gateway process.
// 3. pipeline: from there until every study is done (completion, routing, inference, SR written and
//    delivered), per study.
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { makeModelsDir, startGateway, waitFor } from '../../tests/helpers/gateway.ts';
import { storeResponses } from '../../tests/helpers/ingest.ts';
import { startPrivateRedis } from '../../tests/helpers/redis-server.ts';
import { synthesizeCtSeries } from '../ingest/synth.ts';

const { values } = parseArgs({
  options: { studies: { type: 'string', default: '4' }, instances: { type: 'string', default: '50' } },
});
const STUDIES = Number(values.studies);
const INSTANCES = Number(values.instances);

type Stats = Map<string, number>;

function srCount(dataDir: string): number {
  try {
    return readdirSync(path.join(dataDir, 'results'), { recursive: true }).filter((f) =>
      String(f).endsWith('.dcm'),
    ).length;
  } catch {
    return 0;
  }
}

async function commandStats(redis: Redis): Promise<Stats> {
  const info = await redis.info('commandstats');
  const out: Stats = new Map();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

const total = (s: Stats) => [...s.values()].reduce((a, b) => a + b, 0);
function diff(after: Stats, before: Stats): Stats {
  const d: Stats = new Map();
  for (const [k, v] of after) {
    const n = v - (before.get(k) ?? 0);
    if (n > 0) d.set(k, n);
  }
  return d;
}
const top = (s: Stats, per: number, n = 8) =>
  [...s.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, v]) => `${k} ${(v / per).toFixed(2)}`)
    .join(', ');

const redisServer = await startPrivateRedis();
const dir = await mkdtemp(path.join(tmpdir(), 'aigw-scale-'));
const gateway = await startGateway({
  modelsDir: await makeModelsDir(['uniformity']),
  config: {
    redis: { url: redisServer.url },
    study: { quietPeriodMs: 1000 },
    worker: { concurrency: 2 },
  },
});
const redis = new Redis(redisServer.url);
try {
  const series: string[][] = [];
  for (let s = 0; s < STUDIES; s++) {
    series.push(
      await synthesizeCtSeries({
        dir: path.join(dir, `s${s}`),
        instances: INSTANCES,
        rows: 128,
        columns: 128,
      }),
    );
  }
  // Warm-up study (not counted): JIT, model session, first keys.
  const warm = await synthesizeCtSeries({
    dir: path.join(dir, 'warm'),
    instances: 5,
    rows: 128,
    columns: 128,
  });
  await gateway.store(warm);
  await waitFor('the warm-up study done', async () => {
    const rows = await gateway.api<{ state: string }[]>('/api/studies');
    return rows.length === 1 && rows[0]!.state === 'done' ? true : undefined;
  });

  await new Promise((r) => setTimeout(r, 2000));
  const idle0 = await commandStats(redis);
  const idleStart = Date.now();
  await new Promise((r) => setTimeout(r, 10_000));
  const idle = diff(await commandStats(redis), idle0);
  // INFO itself is counted; leave it out everywhere.
  idle.delete('info');
  const idlePerSec = total(idle) / ((Date.now() - idleStart) / 1000);

  const before = await commandStats(redis);
  const t0 = Date.now();
  // At most 4 associations at once (below any per-AE association limit), one study each.
  const queue = series.slice();
  const stored: number[] = [];
  await Promise.all(
    Array.from({ length: Math.min(4, STUDIES) }, async () => {
      for (let files = queue.shift(); files; files = queue.shift()) {
        const r = await gateway.store(files, { args: ['-v'], timeoutMs: 300_000 });
        stored.push(storeResponses(`${r.stdout}${r.stderr}`).filter((s) => s === 'Success').length);
      }
    }),
  );
  const ingestMs = Date.now() - t0;
  const afterIngest = await commandStats(redis);
  const ok = stored.reduce((a, b) => a + b, 0);
  if (ok !== STUDIES * INSTANCES) throw new Error(`only ${ok} of ${STUDIES * INSTANCES} stored`);
  // Watched on the file system (an SR per study in the results folder), not through the API, so the wait
  // adds no Redis commands; then a second for the last state writes.
  await waitFor(
    'an SR for every study',
    async () => (srCount(gateway.dataDir) === STUDIES + 1 ? true : undefined),
    300_000,
  );
  await new Promise((r) => setTimeout(r, 1000));
  const pipelineMs = Date.now() - t0 - ingestMs;
  const afterAll = await commandStats(redis);

  const ingest = diff(afterIngest, before);
  ingest.delete('info');
  const pipeline = diff(afterAll, afterIngest);
  pipeline.delete('info');
  const ingestNet = total(ingest) - idlePerSec * (ingestMs / 1000);
  const pipelineNet = total(pipeline) - idlePerSec * (pipelineMs / 1000);
  const n = STUDIES * INSTANCES;
  console.log(
    JSON.stringify(
      {
        studies: STUDIES,
        instancesPerStudy: INSTANCES,
        associationsAtOnce: Math.min(4, STUDIES),
        idleCommandsPerSecond: Number(idlePerSec.toFixed(1)),
        idleTop: top(idle, (Date.now() - idleStart) / 1000),
        ingestSeconds: ingestMs / 1000,
        ingestInstancesPerSecond: Number((n / (ingestMs / 1000)).toFixed(1)),
        ingestCommandsPerInstance: Number((ingestNet / n).toFixed(2)),
        ingestTopPerInstance: top(ingest, n),
        pipelineSeconds: pipelineMs / 1000,
        pipelineCommandsPerStudy: Number((pipelineNet / STUDIES).toFixed(1)),
        pipelineCommandsPerInstance: Number((pipelineNet / n).toFixed(2)),
        pipelineTopPerStudy: top(pipeline, STUDIES, 12),
        totalCommandsPerInstance: Number(((ingestNet + pipelineNet) / n).toFixed(2)),
      },
      null,
      2,
    ),
  );
} finally {
  redis.disconnect();
  await gateway.dispose();
  await redisServer.kill();
  await rm(dir, { recursive: true, force: true });
}
