// Ingest benchmark: the same synthetic 200-instance 512×512 CT series sent with dcmtk storescu to the gateway,
// to dcmtk storescp and to Orthanc, over 1 and 4 associations, in one run; then a study of at least 1 GB to
// the gateway alone, reporting the gateway's peak RSS.
//
// Fairness: every sender and receiver runs with Nagle off. Every process gets TCP_NODELAY=1 (DCMTK, and so
// storescu, storescp and Orthanc, reads it; the gateway sets TCP_NODELAY on its own sockets), and the bench
// FAILS unless (a) each sender's and receiver's /proc/<pid>/environ holds TCP_NODELAY=1 and (b) each
// receiver, traced with strace during one association, calls setsockopt(TCP_NODELAY, 1) on it.
//
//   npm run bench:ingest                 # full run
//   npm run bench:ingest -- --quick      # 40 instances, 256 MB big study: a smoke run
//   npm run bench:ingest -- --cpu-prof D # also writes a V8 CPU profile of the gateway into folder D
//
// Every receiver first gets the same warm-up series (not timed), so no one's JIT warm-up is in its figure.
//
// Durability differs, and is printed beside the figures: the gateway fsyncs every instance and its directory
// before answering; Orthanc fsyncs its storage area ("SyncStorageArea", default true) and commits SQLite;
// storescp (+B, bit-preserving) never fsyncs (dcmtk has no option for it).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { freePort } from '../../tests/helpers/dicom-tools.ts';
import { dcmtk, storeResponses } from '../../tests/helpers/ingest.ts';
import { startOrthanc, type OrthancInstance } from '../../tests/helpers/orthanc.ts';
import { synthesizeCtSeries } from './synth.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const quick = process.argv.includes('--quick');
const cpuProfIndex = process.argv.indexOf('--cpu-prof');
const CPU_PROF_DIR = cpuProfIndex > 0 ? path.resolve(process.argv[cpuProfIndex + 1] ?? '.') : undefined;
const WARMUP_INSTANCES = quick ? 12 : 40;
const INSTANCES = quick ? 40 : 200;
const BIG_STUDY_BYTES = (quick ? 0.25 : 1.05) * 1024 ** 3;
const BIG_FRAMES = 200; // 512×512×2 bytes × 200 frames ≈ 105 MB per instance
const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** The socket setting every process of the bench runs with. */
const NODELAY_ENV = { TCP_NODELAY: '1' };

interface Target {
  name: string;
  port: number;
  aet: string;
  durability: string;
}

/** Fails unless the process's environment holds TCP_NODELAY=1. */
function assertNoDelayEnv(pid: number | undefined, what: string): void {
  if (pid === undefined) throw new Error(`socket check: ${what} has no process id`);
  let environ: string[];
  try {
    environ = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
  } catch (err) {
    throw new Error(`socket check: cannot read the environment of ${what} (pid ${pid})`, { cause: err });
  }
  if (!environ.includes('TCP_NODELAY=1')) {
    throw new Error(
      `socket check FAILED: ${what} (pid ${pid}) runs without TCP_NODELAY=1: unfair comparison`,
    );
  }
}

/**
 * Fails unless the receiver, traced during one C-ECHO association, turns Nagle off on the accepted socket
 * (setsockopt(..., TCP_NODELAY, [1], ...)): what the environment asks for must also be what happens.
 */
async function assertReceiverNoDelay(pid: number | undefined, target: Target, dir: string): Promise<void> {
  if (pid === undefined) throw new Error(`socket check: ${target.name} has no process id`);
  const out = path.join(dir, `strace-${target.name}.txt`);
  const tracer = spawn('strace', ['-f', '-p', String(pid), '-e', 'trace=setsockopt', '-o', out], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const attached = new Promise<void>((resolve, reject) => {
    tracer.once('error', (e) => reject(new Error(`socket check needs strace: ${e.message}`)));
    tracer.once('exit', (code) => reject(new Error(`strace exited with ${code} before attaching`)));
    tracer.stderr.on('data', (d: Buffer) => {
      if (d.toString().includes('attached')) resolve();
    });
  });
  try {
    await attached;
    const echo = await dcmtk('echoscu', [
      '-aet',
      'BENCH',
      '-aec',
      target.aet,
      '127.0.0.1',
      String(target.port),
    ]);
    if (echo.code !== 0) throw new Error(`socket check: C-ECHO to ${target.name} failed:\n${echo.out}`);
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    const gone = new Promise((r) => tracer.once('exit', r));
    tracer.kill('SIGINT');
    await gone;
  }
  const trace = await readFile(out, 'utf8');
  if (!/TCP_NODELAY, \[1\]/.test(trace)) {
    throw new Error(
      `socket check FAILED: ${target.name} did not set TCP_NODELAY on its association socket: unfair comparison\n${trace}`,
    );
  }
}

/** One storescu run; its environment is checked for TCP_NODELAY=1 while it runs. */
function storescu(args: string[]): Promise<{ code: number; out: string }> {
  const child = spawn('storescu', args, {
    env: { ...process.env, ...NODELAY_ENV },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<{ code: number; out: string }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, out }));
  });
  // spawn() returns once exec has succeeded, so this is storescu's own environment.
  assertNoDelayEnv(child.pid, 'storescu (sender)');
  return done;
}

/** Sends `files` with `associations` storescu processes in parallel; instances per second. */
async function send(target: Target, files: string[], associations: number): Promise<number> {
  const groups: string[][] = Array.from({ length: associations }, () => []);
  files.forEach((f, i) => groups[i % associations]!.push(f));
  const started = process.hrtime.bigint();
  // No timeout: the 1 GB study may take longer than a test's minute.
  const results = await Promise.all(
    groups.map((g) =>
      storescu(['-v', '-aet', 'BENCH', '-aec', target.aet, '127.0.0.1', String(target.port), ...g]),
    ),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const ok = results.reduce((n, r) => n + storeResponses(r.out).filter((s) => s === 'Success').length, 0);
  if (ok !== files.length) {
    throw new Error(
      `${target.name}: ${ok}/${files.length} stored\n${results.map((r) => r.out.slice(-1500)).join('\n')}`,
    );
  }
  return files.length / seconds;
}

async function waitForPort(port: number, aet: string, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    const echo = await dcmtk('echoscu', ['-aec', aet, '127.0.0.1', String(port)]).catch(() => undefined);
    if (echo !== undefined && echo.code === 0) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  child.kill('SIGKILL');
  throw new Error(`${what} did not start`);
}

interface GatewayUnderTest {
  target: Target;
  pid: number;
  stop(): Promise<void>;
}

async function startGatewayProcess(dir: string): Promise<GatewayUnderTest> {
  const port = await freePort();
  const prefix = `aigw-bench-${randomBytes(4).toString('hex')}`;
  const modelsDir = path.join(dir, 'models');
  await mkdir(modelsDir, { recursive: true });
  const configPath = path.join(dir, 'gateway.yaml');
  await writeFile(
    configPath,
    stringify({
      dimse: { aeTitle: 'AIGATEWAY', host: '127.0.0.1', port },
      http: { host: '127.0.0.1', port: await freePort() },
      redis: { url: REDIS_URL, prefix, autoStart: true },
      dataDir: path.join(dir, 'data'),
      modelsDir,
      spool: { minFreeBytes: 256 * 1024 ** 2 },
      // Keep completion (routing) out of the measurement: only ingest is timed.
      study: { quietPeriodMs: 3_600_000 },
    }),
  );
  const child = spawn(
    process.execPath,
    [
      ...(CPU_PROF_DIR !== undefined ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF_DIR] : []),
      '--import',
      'tsx',
      path.join(REPO, 'src/cli.ts'),
      'gateway',
      '--config',
      configPath,
    ],
    {
      cwd: REPO,
      env: { ...process.env, ...NODELAY_ENV, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'ignore'],
    },
  );
  await waitForPort(port, 'AIGATEWAY', child, 'gateway');
  return {
    target: {
      name: 'gateway',
      port,
      aet: 'AIGATEWAY',
      durability: 'fsync file + directory, indexed in Redis',
    },
    pid: child.pid!,
    async stop() {
      await new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      });
      const redis = new Redis(REDIS_URL);
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    },
  };
}

async function startStorescp(dir: string): Promise<{ target: Target; pid: number; stop(): Promise<void> }> {
  const port = await freePort();
  const out = path.join(dir, 'storescp');
  await mkdir(out, { recursive: true });
  // --fork: one process per association, so 4 associations run in parallel as they do in the others.
  const child = spawn('storescp', ['--fork', '+B', '-od', out, '-pdu', '131072', String(port)], {
    env: { ...process.env, ...NODELAY_ENV },
    stdio: 'ignore',
  });
  await waitForPort(port, 'STORESCP', child, 'storescp');
  return {
    pid: child.pid!,
    target: { name: 'storescp', port, aet: 'STORESCP', durability: 'no fsync (dcmtk has no option)' },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 200));
    },
  };
}

/** Linux clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on). */
const CLK_TCK = 100;

/**
 * CPU time (user + system, all threads) a process has used, in ms, from /proc/<pid>/stat; with `children`,
 * plus that of its children it has waited for (storescp --fork: one child per association).
 */
async function cpuMs(pid: number, children = false): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)": state is field 3, utime 14, stime 15, cutime 16, cstime 17 (proc(5)).
  const f = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  const ticks = f[11]! + f[12]! + (children ? f[13]! + f[14]! : 0);
  return (ticks * 1000) / CLK_TCK;
}

/** The local Redis server's process id (its CPU is part of the gateway's cost), if it runs on this host. */
async function redisPid(): Promise<number | undefined> {
  const redis = new Redis(REDIS_URL);
  try {
    const info = await redis.info('server');
    const pid = Number(/process_id:(\d+)/.exec(info)?.[1]);
    if (!Number.isInteger(pid)) return undefined;
    await readFile(`/proc/${pid}/stat`, 'utf8');
    return pid;
  } catch {
    return undefined;
  } finally {
    redis.disconnect();
  }
}

/** Peak and current resident set size of a process, in MiB (Linux /proc). */
async function memory(pid: number): Promise<{ peakMiB: number; rssMiB: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
  return { peakMiB: kb('VmHWM') / 1024, rssMiB: kb('VmRSS') / 1024 };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-bench-ingest-'));
  let orthanc: OrthancInstance | undefined;
  const stops: (() => Promise<void>)[] = [];
  try {
    console.log(`synthesizing ${INSTANCES} CT instances (512×512×16 bit), one fresh series per run…`);
    const gateway = await startGatewayProcess(path.join(dir, 'gw'));
    stops.push(() => gateway.stop());
    const storescp = await startStorescp(dir);
    stops.push(() => storescp.stop());
    orthanc = await startOrthanc({ extraConfig: { DicomThreadsCount: 4 }, env: NODELAY_ENV });
    const orthancTarget: Target = {
      name: 'orthanc',
      port: orthanc.dicomPort,
      aet: orthanc.aet,
      durability: 'SyncStorageArea (fsync) + SQLite',
    };
    const targets = [gateway.target, storescp.target, orthancTarget];
    const pids = new Map([
      ['gateway', gateway.pid],
      ['storescp', storescp.pid],
      ['orthanc', orthanc.pid],
    ]);
    for (const t of targets) {
      assertNoDelayEnv(pids.get(t.name), t.name);
      await assertReceiverNoDelay(pids.get(t.name), t, dir);
    }
    console.log('socket check: every sender and receiver runs with TCP_NODELAY=1; every receiver sets it');
    console.log(`load average at the start: ${(await readFile('/proc/loadavg', 'utf8')).trim()}`);
    const rss0 = await memory(gateway.pid);

    const warmup = await synthesizeCtSeries({ dir: path.join(dir, 'warmup'), instances: WARMUP_INSTANCES });
    for (const target of targets) {
      // The same files to each receiver, which stores each under its own UIDs once.
      await send(target, warmup, 4);
    }
    const rates = new Map<string, number>();
    /** CPU ms per instance of each receiver (and of Redis during the gateway's runs), by `name/associations`. */
    const cpu = new Map<string, number>();
    const redis = await redisPid();
    // storescp forks a child per association: its CPU is the parent's plus its reaped children's. A child is
    // reaped when the parent next accepts, so one C-ECHO after each series makes it count that series.
    const settle = async (t: Target) => {
      if (t.name !== 'storescp') return;
      await dcmtk('echoscu', ['-aet', 'BENCH', '-aec', t.aet, '127.0.0.1', String(t.port)]);
      await new Promise((r) => setTimeout(r, 300));
    };
    let runNo = 0;
    for (const associations of [1, 4]) {
      for (const target of targets) {
        const files = await synthesizeCtSeries({
          dir: path.join(dir, `series-${runNo++}`),
          instances: INSTANCES,
        });
        const pid = pids.get(target.name)!;
        const withChildren = target.name === 'storescp';
        await settle(target);
        const cpu0 = await cpuMs(pid, withChildren);
        const redis0 = redis !== undefined ? await cpuMs(redis) : NaN;
        const rate = await send(target, files, associations);
        const redis1 = redis !== undefined ? await cpuMs(redis) : NaN;
        await settle(target);
        const used = ((await cpuMs(pid, withChildren)) - cpu0) / files.length;
        rates.set(`${target.name}/${associations}`, rate);
        cpu.set(`${target.name}/${associations}`, used);
        if (target.name === 'gateway') cpu.set(`redis/${associations}`, (redis1 - redis0) / files.length);
        console.log(
          `  ${target.name.padEnd(9)} ${associations} assoc: ${rate.toFixed(1)} instances/s, ` +
            `${used.toFixed(2)} CPU ms/instance`,
        );
        await rm(path.dirname(files[0]!), { recursive: true, force: true });
      }
    }

    console.log(
      `\nsending a ${(BIG_STUDY_BYTES / 1024 ** 3).toFixed(2)} GB study to the gateway (multi-frame, ${BIG_FRAMES} frames/instance)…`,
    );
    const perInstance = 512 * 512 * 2 * BIG_FRAMES;
    const bigFiles = await synthesizeCtSeries({
      dir: path.join(dir, 'big'),
      instances: Math.ceil(BIG_STUDY_BYTES / perInstance),
      frames: BIG_FRAMES,
    });
    const bigStarted = Date.now();
    await send(gateway.target, bigFiles, 1);
    const bigSeconds = (Date.now() - bigStarted) / 1000;
    const rss1 = await memory(gateway.pid);

    const r = (k: string) => rates.get(k) ?? NaN;
    console.log('\n| receiver | durability | 1 association (inst/s) | 4 associations (inst/s) |');
    console.log('| --- | --- | ---: | ---: |');
    for (const t of targets) {
      console.log(
        `| ${t.name} | ${t.durability} | ${r(`${t.name}/1`).toFixed(1)} | ${r(`${t.name}/4`).toFixed(1)} |`,
      );
    }
    for (const a of [1, 4]) {
      console.log(
        `gateway/storescp (${a}): ${(r(`gateway/${a}`) / r(`storescp/${a}`)).toFixed(2)}×   ` +
          `gateway/orthanc (${a}): ${(r(`gateway/${a}`) / r(`orthanc/${a}`)).toFixed(2)}×`,
      );
    }
    // CPU per instance does not swing with other people's load as the rates do: the fair comparison of cost.
    const c = (k: string) => cpu.get(k) ?? NaN;
    console.log('\n| receiver | CPU ms/instance, 1 association | CPU ms/instance, 4 associations |');
    console.log('| --- | ---: | ---: |');
    for (const t of targets) {
      console.log(`| ${t.name} | ${c(`${t.name}/1`).toFixed(2)} | ${c(`${t.name}/4`).toFixed(2)} |`);
    }
    console.log(
      `| Redis during the gateway's runs (shared server: other clients' work included) | ` +
        `${c('redis/1').toFixed(2)} | ${c('redis/4').toFixed(2)} |`,
    );
    console.log(`load average at the end: ${(await readFile('/proc/loadavg', 'utf8')).trim()}`);
    const bigMB = (bigFiles.length * perInstance) / 1024 ** 2;
    console.log(
      `big study: ${bigFiles.length} instances, ${bigMB.toFixed(0)} MiB in ${bigSeconds.toFixed(1)} s ` +
        `(${(bigMB / bigSeconds).toFixed(0)} MiB/s); gateway RSS before ${rss0.rssMiB.toFixed(0)} MiB, ` +
        `peak ${rss1.peakMiB.toFixed(0)} MiB (target < 300 MiB): ${rss1.peakMiB < 300 ? 'OK' : 'OVER'}`,
    );
  } finally {
    for (const stop of stops) await stop().catch(() => undefined);
    await orthanc?.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
