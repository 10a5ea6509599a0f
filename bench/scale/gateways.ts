// One gateway process against two, sharing one Redis and one S3 server (docs/scale-out.md): what a second
// ingest process adds, and what each instance costs Redis, the S3 server and the CPU.
//
//   npm run bench:scale [-- --instances N] [-- --rounds R] [-- --backends s3,filesystem]
//
// Every run starts the gateways fresh (the real CLI, role `gateway`: no inference worker, so nothing
// competes with ingest for the cores; the quiet period is an hour, so completion and routing stay out of
// the window too) on a private redis-server (INFO commandstats holds only this bench's commands) with a Redis
// prefix of its own, and for the S3 backend a fresh s3rver in a child process whose Koa app counts every
// request by S3 operation before s3rver handles it.
//   A: one gateway, 4 storescu associations (TCP_NODELAY=1) sending the same N synthetic 512×512 CT instances.
//   B: two gateways, 2 associations to each, the same N instances split over the 4 (one study over both
//      gateways, as a load balancer would spread it).
// Before the timed window each gateway gets a warm-up series of its own (JIT, connections; not counted), then
// the idle rates (Redis commands, S3 requests, CPU of every process) are measured over IDLE_MS and
// subtracted from the window, as bench/scale/redis-commands.ts does.
// s3rver is a slow JavaScript test server (it keeps objects as files, and computes MD5s in JS), not MinIO:
// its CPU per instance is the price of this emulator, not of S3. The filesystem runs (each gateway its own
// data directory) show the gateway without it.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, loadavg, cpus } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { freePort } from '../../tests/helpers/dicom-tools.ts';
import { storeResponses } from '../../tests/helpers/ingest.ts';
import { silenceSdkNodeVersionWarning } from '../../src/storage/s3-store.ts';
import { startPrivateRedis } from '../../tests/helpers/redis-server.ts';
import { S3RVER_ACCESS_KEY_ID, S3RVER_SECRET_ACCESS_KEY } from '../../tests/helpers/s3-server.ts';
import { synthesizeCtSeries } from '../ingest/synth.ts';
import { NODE_FLAGS } from '../../src/util/node-flags.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const { values } = parseArgs({
  options: {
    instances: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '1' },
    backends: { type: 'string', default: 's3,filesystem' },
  },
});
const INSTANCES = Number(values.instances);
const ROUNDS = Number(values.rounds);
const BACKENDS = values.backends.split(',') as ('s3' | 'filesystem')[];
const ASSOCIATIONS = 4;
const WARMUP_INSTANCES = 20;
const IDLE_MS = 5_000;
const BUCKET = 'aigw-bench';
silenceSdkNodeVersionWarning();
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

type Counts = Map<string, number>;
const sum = (c: Counts) => [...c.values()].reduce((a, b) => a + b, 0);
function diff(after: Counts, before: Counts): Counts {
  const d: Counts = new Map();
  for (const [k, v] of after) {
    const n = v - (before.get(k) ?? 0);
    if (n > 0) d.set(k, n);
  }
  return d;
}
const perInstance = (c: Counts, n: number) =>
  [...c.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${(v / n).toFixed(2)}`)
    .join(', ');

/** User + system CPU time of a process (all its threads), in ms, from /proc/<pid>/stat. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3; utime is 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/** redis-server's own CPU time in ms (INFO cpu, microsecond resolution, unlike /proc's ticks). */
async function redisCpuMs(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const user = Number(/used_cpu_user:([\d.]+)/.exec(info)![1]);
  const sys = Number(/used_cpu_sys:([\d.]+)/.exec(info)![1]);
  return (user + sys) * 1000;
}

async function commandStats(redis: Redis): Promise<Counts> {
  const info = await redis.info('commandstats');
  const out: Counts = new Map();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]));
  // INFO is this bench's own command.
  out.delete('info');
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// s3rver with a request counter in front of its own middleware. GET /__aigw_counts answers the counts (and
// is not counted).
const S3RVER_CHILD = `
const S3rver = require('s3rver');
const cfg = JSON.parse(process.env.S3_BENCH_SERVER);
const server = new S3rver({
  port: 0, address: '127.0.0.1', silent: true, directory: cfg.directory,
  configureBuckets: [{ name: cfg.bucket }],
});
const counts = {};
function operation(ctx) {
  const isObject = ctx.path.split('/').filter(Boolean).length > 1;
  const q = ctx.query;
  switch (ctx.method) {
    case 'PUT':
      if (!isObject) return 'CreateBucket';
      if ('partNumber' in q) return 'UploadPart';
      return ctx.get('x-amz-copy-source') ? 'CopyObject' : 'PutObject';
    case 'POST':
      if ('uploads' in q) return 'CreateMultipartUpload';
      if ('uploadId' in q) return 'CompleteMultipartUpload';
      if ('delete' in q) return 'DeleteObjects';
      return 'POST';
    case 'GET':
      if (isObject) return 'GetObject';
      return 'uploads' in q ? 'ListMultipartUploads' : 'ListObjects';
    case 'HEAD':
      return isObject ? 'HeadObject' : 'HeadBucket';
    case 'DELETE':
      if ('uploadId' in q) return 'AbortMultipartUpload';
      return isObject ? 'DeleteObject' : 'DeleteBucket';
    default:
      return ctx.method;
  }
}
server.middleware.unshift(async (ctx, next) => {
  if (ctx.path === '/__aigw_counts') {
    ctx.body = counts;
    return;
  }
  const op = operation(ctx);
  counts[op] = (counts[op] || 0) + 1;
  await next();
});
server.run().then(
  (addr) => process.stdout.write('PORT ' + addr.port + '\\n'),
  (err) => { process.stderr.write(String((err && err.stack) || err) + '\\n'); process.exit(1); },
);
process.on('SIGTERM', () => server.close().finally(() => process.exit(0)));
`;

interface CountingS3 {
  endpoint: string;
  /**
   * Puts an object `<dirPrefix>.keep`, so that s3rver never removes that folder: its filesystem store
   * deletes a key's folder when the folder becomes empty, racing a concurrent PutObject that has just
   * created the folder and is opening its file there (ENOENT on an unhandled stream error: s3rver exits).
   * Staging objects come and go 4 at a time in this bench, so without this s3rver crashes within seconds.
   */
  keepDirectory(dirPrefix: string): Promise<void>;
  pid: number;
  counts(): Promise<Counts>;
  dispose(): Promise<void>;
}

async function startCountingS3(): Promise<CountingS3> {
  const directory = await mkdtemp(path.join(tmpdir(), 'aigw-bench-s3rver-'));
  // s3rver's ListObjectsV2 continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider.
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '-e', S3RVER_CHILD], {
    cwd: REPO,
    env: { ...process.env, S3_BENCH_SERVER: JSON.stringify({ directory, bucket: BUCKET }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`s3rver did not start in 15 s: ${stderr}`)), 15_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /PORT (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited with ${code}: ${stderr}`));
    });
  });
  child.once('exit', (code, signal) => {
    if (!stopping) console.error(`s3rver exited (${code ?? signal}) during the run:\n${stderr.slice(-3000)}`);
  });
  let stopping = false;
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    pid: child.pid!,
    async keepDirectory(dirPrefix) {
      const client = new S3Client({
        region: 'us-east-1',
        endpoint,
        forcePathStyle: true,
        credentials: { accessKeyId: S3RVER_ACCESS_KEY_ID, secretAccessKey: S3RVER_SECRET_ACCESS_KEY },
      });
      try {
        await client.send(
          new PutObjectCommand({ Bucket: BUCKET, Key: `${dirPrefix}.keep`, Body: '', ContentLength: 0 }),
        );
      } finally {
        client.destroy();
      }
    },
    async counts() {
      const res = await fetch(`${endpoint}/__aigw_counts`);
      if (!res.ok) throw new Error(`s3rver counts: ${res.status}`);
      return new Map(Object.entries((await res.json()) as Record<string, number>));
    },
    async dispose() {
      stopping = true;
      await stopChild(child);
      await rm(directory, { recursive: true, force: true });
    },
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------------------
interface BenchGateway {
  pid: number;
  dimsePort: number;
  stop(): Promise<void>;
}

async function startBenchGateway(opts: {
  dir: string;
  redisUrl: string;
  prefix: string;
  storage: Record<string, unknown>;
}): Promise<BenchGateway> {
  const dimsePort = await freePort();
  const httpPort = await freePort();
  const configPath = path.join(opts.dir, 'gateway.yaml');
  const modelsDir = path.join(opts.dir, 'models');
  await mkdir(modelsDir);
  await writeFile(
    configPath,
    stringify({
      dimse: { aeTitle: 'AIGATEWAY', host: '127.0.0.1', port: dimsePort },
      http: { host: '127.0.0.1', port: httpPort },
      redis: { url: opts.redisUrl, prefix: opts.prefix, autoStart: false },
      dataDir: path.join(opts.dir, 'data'),
      // No models: role gateway routes nothing within the window anyway (the quiet period is an hour).
      modelsDir,
      storage: opts.storage,
      spool: { minFreeBytes: 256 * 1024 ** 2 },
      // Keep completion (routing) out of the window: only ingest is measured.
      study: { quietPeriodMs: 3_600_000 },
    }),
  );
  const child = spawn(
    process.execPath,
    [...NODE_FLAGS, '--import', 'tsx', path.join(REPO, 'src/cli.ts'), 'gateway', '--config', configPath],
    {
      cwd: REPO,
      env: { ...process.env, TCP_NODELAY: '1', LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let log = '';
  const keep = (d: Buffer) => (log = (log + d.toString()).slice(-4000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}:\n${log}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gateway did not become ready in 90 s:\n${log}`);
    }
    const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  return { pid: child.pid!, dimsePort, stop: () => stopChild(child) };
}

/** One storescu association sending `files`; the number answered Success. */
function storescu(port: number, files: string[]): Promise<number> {
  const child = spawn(
    'storescu',
    ['-v', '-aet', 'BENCH', '-aec', 'AIGATEWAY', '127.0.0.1', String(port), ...files],
    {
      env: { ...process.env, TCP_NODELAY: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', () => resolve(storeResponses(out).filter((s) => s === 'Success').length));
  });
}

interface RunResult {
  backend: 's3' | 'filesystem';
  gateways: number;
  seconds: number;
  instancesPerSecond: number;
  redisCommandsPerInstance: number;
  redisTop: string;
  redisCpuMsPerInstance: number;
  s3RequestsPerInstance?: number;
  s3Top?: string;
  gatewayCpuMsPerInstance: number;
  s3rverCpuMsPerInstance?: number;
  idleRedisCommandsPerSecond: number;
  idleS3RequestsPerSecond?: number;
}

async function runOnce(
  backend: 's3' | 'filesystem',
  gatewayCount: 1 | 2,
  redis: Redis,
  redisUrl: string,
  series: string[],
  warmups: string[][],
): Promise<RunResult> {
  const prefix = `aigw-scale-${randomBytes(4).toString('hex')}`;
  const s3 = backend === 's3' ? await startCountingS3() : undefined;
  const dirs: string[] = [];
  const gateways: BenchGateway[] = [];
  try {
    const storage = s3
      ? {
          backend: 's3',
          s3: {
            bucket: BUCKET,
            endpoint: s3.endpoint,
            region: 'us-east-1',
            prefix: `${prefix}/`,
            forcePathStyle: true,
            accessKeyId: S3RVER_ACCESS_KEY_ID,
            secretAccessKey: S3RVER_SECRET_ACCESS_KEY,
          },
        }
      : { backend: 'filesystem' };
    if (s3) await s3.keepDirectory(`${prefix}/staging/`);
    // One after the other: the first creates what the second finds.
    for (let i = 0; i < gatewayCount; i++) {
      const dir = await mkdtemp(path.join(tmpdir(), 'aigw-bench-gw-'));
      dirs.push(dir);
      gateways.push(await startBenchGateway({ dir, redisUrl, prefix, storage }));
    }
    for (const [i, gw] of gateways.entries()) {
      const ok = await storescu(gw.dimsePort, warmups[i]!);
      if (ok !== warmups[i]!.length) throw new Error(`warm-up: ${ok} of ${warmups[i]!.length} stored`);
    }
    await new Promise((r) => setTimeout(r, 2000));

    const pids = gateways.map((g) => g.pid);
    const snapshot = async () => ({
      at: process.hrtime.bigint(),
      redis: await commandStats(redis),
      s3: s3 ? await s3.counts() : new Map<string, number>(),
      gatewayCpu: pids.reduce((a, p) => a + cpuMs(p), 0),
      s3Cpu: s3 ? cpuMs(s3.pid) : 0,
      redisCpu: await redisCpuMs(redis),
    });
    const seconds = (a: { at: bigint }, b: { at: bigint }) => Number(b.at - a.at) / 1e9;

    const idle0 = await snapshot();
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const idle1 = await snapshot();
    const idleS = seconds(idle0, idle1);
    const idleRedis = sum(diff(idle1.redis, idle0.redis)) / idleS;
    const idleS3 = sum(diff(idle1.s3, idle0.s3)) / idleS;
    const idleGwCpu = (idle1.gatewayCpu - idle0.gatewayCpu) / idleS;
    const idleS3Cpu = (idle1.s3Cpu - idle0.s3Cpu) / idleS;
    const idleRedisCpu = (idle1.redisCpu - idle0.redisCpu) / idleS;

    // The instances dealt round-robin over 4 associations; in B associations 0, 2 go to the first gateway.
    const groups: string[][] = Array.from({ length: ASSOCIATIONS }, () => []);
    series.forEach((f, i) => groups[i % ASSOCIATIONS]!.push(f));
    const t0 = await snapshot();
    const stored = await Promise.all(
      groups.map((g, i) => storescu(gateways[i % gatewayCount]!.dimsePort, g)),
    );
    const t1 = await snapshot();
    const ok = stored.reduce((a, b) => a + b, 0);
    if (ok !== series.length)
      throw new Error(`${backend} × ${gatewayCount}: ${ok} of ${series.length} stored`);
    const s = seconds(t0, t1);
    const n = series.length;
    const redisD = diff(t1.redis, t0.redis);
    const s3D = diff(t1.s3, t0.s3);
    // Success was answered after the commit (CopyObject) of each instance: the server must have seen them all.
    if (s3 && (s3D.get('CopyObject') ?? 0) < n)
      throw new Error(`${n} instances answered Success but s3rver saw ${s3D.get('CopyObject') ?? 0} commits`);
    return {
      backend,
      gateways: gatewayCount,
      seconds: s,
      instancesPerSecond: n / s,
      redisCommandsPerInstance: (sum(redisD) - idleRedis * s) / n,
      redisTop: perInstance(redisD, n).split(', ').slice(0, 6).join(', '),
      redisCpuMsPerInstance: (t1.redisCpu - t0.redisCpu - idleRedisCpu * s) / n,
      gatewayCpuMsPerInstance: (t1.gatewayCpu - t0.gatewayCpu - idleGwCpu * s) / n,
      idleRedisCommandsPerSecond: idleRedis,
      ...(s3
        ? {
            s3RequestsPerInstance: (sum(s3D) - idleS3 * s) / n,
            s3Top: perInstance(s3D, n),
            s3rverCpuMsPerInstance: (t1.s3Cpu - t0.s3Cpu - idleS3Cpu * s) / n,
            idleS3RequestsPerSecond: idleS3,
          }
        : {}),
    };
  } finally {
    for (const gw of gateways) await gw.stop().catch(() => undefined);
    await s3?.dispose().catch(() => undefined);
    for (const d of dirs) await rm(d, { recursive: true, force: true });
    const keys = await redis.keys(`${prefix}:*`);
    for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
  }
}

const fmt = (x: number | undefined, d = 1) => (x === undefined ? '–' : x.toFixed(d));

const uptime = () => execFileSync('uptime').toString().trim();
const startUptime = uptime();
console.log(`start: ${new Date().toISOString()} ${startUptime}`);
console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}; node ${process.version}`);
const redisServer = await startPrivateRedis();
const redis = new Redis(redisServer.url);
const workDir = await mkdtemp(path.join(tmpdir(), 'aigw-bench-scale-'));
const results: RunResult[] = [];
try {
  const redisPid = Number(/process_id:(\d+)/.exec(await redis.info('server'))![1]);
  const redisVersion = /redis_version:(\S+)/.exec(await redis.info('server'))![1];
  console.log(
    `redis-server ${redisVersion} (private, pid ${redisPid}); ${INSTANCES} instances of 512×512 CT per run`,
  );
  const series = await synthesizeCtSeries({ dir: path.join(workDir, 'main'), instances: INSTANCES });
  const warmups = [
    await synthesizeCtSeries({ dir: path.join(workDir, 'warm1'), instances: WARMUP_INSTANCES }),
    await synthesizeCtSeries({ dir: path.join(workDir, 'warm2'), instances: WARMUP_INSTANCES }),
  ];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const backend of BACKENDS) {
      for (const count of [1, 2] as const) {
        const r = await runOnce(backend, count, redis, redisServer.url, series, warmups);
        results.push(r);
        console.log(`round ${round}: ${JSON.stringify(r)}`);
      }
    }
  }
} finally {
  redis.disconnect();
  await redisServer.kill();
  await rm(workDir, { recursive: true, force: true });
}

const endUptime = uptime();
console.log(
  `\nend: ${new Date().toISOString()} ${endUptime}; load at start ${startUptime.replace(/.*load average: /, '')}, now ${loadavg()
    .map((l) => l.toFixed(2))
    .join(', ')}\n`,
);
console.log(
  '| backend | gateways | inst/s | B/A | Redis cmds / inst | S3 requests / inst | gateway CPU ms / inst | s3rver CPU ms / inst | redis-server CPU ms / inst |',
);
console.log('| --- | --: | --: | --: | --: | --: | --: | --: | --: |');
const lastA = new Map<string, RunResult>();
for (const r of results) {
  if (r.gateways === 1) lastA.set(r.backend, r);
  const a = lastA.get(r.backend);
  const ratio = r.gateways === 2 && a ? r.instancesPerSecond / a.instancesPerSecond : undefined;
  console.log(
    `| ${r.backend} | ${r.gateways} | ${fmt(r.instancesPerSecond)} | ${ratio === undefined ? '' : fmt(ratio, 2)} | ${fmt(r.redisCommandsPerInstance)} | ${fmt(r.s3RequestsPerInstance, 2)} | ${fmt(r.gatewayCpuMsPerInstance)} | ${fmt(r.s3rverCpuMsPerInstance)} | ${fmt(r.redisCpuMsPerInstance, 2)} |`,
  );
}
