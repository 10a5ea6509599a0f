// CPU cost per instance of the gateway, A/B: one gateway process per checkout given (default: this one), all
// running at once, fed in turn the same kind of fresh 200-instance series over N associations; each round
// reads every gateway's user and system CPU time from /proc before and after its series. CPU time per
// instance does not swing with other people's load the way instances per second do, and alternating the
// gateways round by round spreads what drift remains evenly over them.
//
//   npx tsx bench/ingest/cpu.ts [--repo DIR]... [--rounds 5] [--instances 200] [--associations 4]
//                               [--strace OUT_PREFIX]   # also a syscall count (strace -c -f) per gateway
//                               [--cpu-prof DIR]        # V8 CPU profiles, DIR/<checkout name>/*.cpuprofile
//                               [--perf OUT_PREFIX]     # perf record -g of the last round (node --perf-basic-prof)
//
// A checkout to compare against, without touching git's worktrees: `git archive <commit> | tar -x -C DIR`,
// then `ln -s <this repo>/node_modules DIR/node_modules`.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { freePort } from '../../tests/helpers/dicom-tools.ts';
import { dcmtk, storeResponses } from '../../tests/helpers/ingest.ts';
import { stopGatewayChild } from './gateway-child.ts';
import { synthesizeCtSeries } from './synth.ts';
import { NODE_FLAGS } from '../../src/util/node-flags.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';
const CLK_TCK = 100;

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}
/** `--repo DIR` or `--repo DIR::NAME=VALUE,...` (extra environment for that gateway, e.g. UV_THREADPOOL_SIZE). */
const repos = process.argv.flatMap((a, i) => (a === '--repo' ? [process.argv[i + 1]!] : []));
if (repos.length === 0) repos.push(REPO);
function repoSpec(spec: string): { dir: string; env: Record<string, string>; label: string } {
  const [dir, vars] = spec.split('::');
  const env = Object.fromEntries(
    (vars ?? '')
      .split(',')
      .filter(Boolean)
      .map((kv) => kv.split('=', 2)),
  );
  return {
    dir: path.resolve(dir!),
    env,
    label: `${path.basename(path.resolve(dir!))}${vars ? ` ${vars}` : ''}`,
  };
}
const ROUNDS = Number(option('--rounds', '5'));
const INSTANCES = Number(option('--instances', '200'));
const ASSOCIATIONS = Number(option('--associations', '4'));
const CPU_PROF = process.argv.includes('--cpu-prof') ? path.resolve(option('--cpu-prof', '.')) : undefined;
const PERF = process.argv.includes('--perf') ? option('--perf', '/tmp/perf') : undefined;
const STRACE = process.argv.includes('--strace') ? option('--strace', '/tmp/strace') : undefined;

interface Gateway {
  repo: string;
  label: string;
  pid: number;
  port: number;
  stop(): Promise<void>;
}

async function startGateway(spec: string, dir: string): Promise<Gateway> {
  const { dir: repo, env, label } = repoSpec(spec);
  const port = await freePort();
  const prefix = `aigw-cpu-${randomBytes(4).toString('hex')}`;
  await mkdir(path.join(dir, 'models'), { recursive: true });
  const configPath = path.join(dir, 'gateway.yaml');
  await writeFile(
    configPath,
    stringify({
      dimse: { aeTitle: 'AIGATEWAY', host: '127.0.0.1', port },
      http: { host: '127.0.0.1', port: await freePort() },
      redis: { url: REDIS_URL, prefix, autoStart: true },
      dataDir: path.join(dir, 'data'),
      modelsDir: path.join(dir, 'models'),
      spool: { minFreeBytes: 256 * 1024 ** 2 },
      study: { quietPeriodMs: 3_600_000 },
    }),
  );
  const child: ChildProcess = spawn(
    process.execPath,
    [
      ...NODE_FLAGS,
      ...(PERF !== undefined ? ['--perf-basic-prof'] : []),
      ...(CPU_PROF !== undefined
        ? ['--cpu-prof', '--cpu-prof-dir', path.join(CPU_PROF, label.replace(/\W+/g, '_'))]
        : []),
      '--import',
      'tsx',
      path.join(repo, 'src/cli.ts'),
      'gateway',
      '--config',
      configPath,
    ],
    { cwd: repo, env: { ...process.env, TCP_NODELAY: '1', LOG_LEVEL: 'warn', ...env }, stdio: 'ignore' },
  );
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway of ${repo} exited with ${child.exitCode}`);
    const echo = await dcmtk('echoscu', ['-aec', 'AIGATEWAY', '127.0.0.1', String(port)]).catch(
      () => undefined,
    );
    if (echo?.code === 0) break;
    if (Date.now() > deadline) throw new Error(`gateway of ${repo} did not start`);
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    repo,
    label,
    pid: child.pid!,
    port,
    stop: () => stopGatewayChild(child, REDIS_URL, prefix),
  };
}

/** User and system CPU ms of a process, all threads (/proc/<pid>/stat fields 14 and 15). */
async function cpu(pid: number): Promise<{ user: number; sys: number; minflt: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  return { user: (f[11]! * 1000) / CLK_TCK, sys: (f[12]! * 1000) / CLK_TCK, minflt: f[7]! };
}

async function send(port: number, files: string[]): Promise<number> {
  const groups: string[][] = Array.from({ length: ASSOCIATIONS }, () => []);
  files.forEach((f, i) => groups[i % ASSOCIATIONS]!.push(f));
  const t0 = process.hrtime.bigint();
  const runs = await Promise.all(
    groups.map((g) =>
      dcmtk(
        'storescu',
        ['-v', '-aet', 'BENCH', '-aec', 'AIGATEWAY', '127.0.0.1', String(port), ...g],
        600_000,
      ),
    ),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const ok = runs.reduce((n, r) => n + storeResponses(r.out).filter((s) => s === 'Success').length, 0);
  if (ok !== files.length) throw new Error(`${ok}/${files.length} stored`);
  return files.length / seconds;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** Other people's load only ever adds CPU time: the lower quartile is the least disturbed figure. */
const quartile = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 4)]!;

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-bench-cpu-'));
  const gateways: Gateway[] = [];
  try {
    for (const [i, repo] of repos.entries())
      gateways.push(await startGateway(repo, path.join(dir, `gw${i}`)));
    const warmup = await synthesizeCtSeries({ dir: path.join(dir, 'warmup'), instances: 40 });
    for (const g of gateways) await send(g.port, warmup);
    const results = gateways.map(() => ({
      user: [] as number[],
      sys: [] as number[],
      rate: [] as number[],
      faults: [] as number[],
    }));
    for (let round = 0; round < ROUNDS; round++) {
      // Each round in a different order, so neither gateway always follows the other.
      const order = gateways.map((_, i) => i);
      if (round % 2 === 1) order.reverse();
      for (const i of order) {
        const g = gateways[i]!;
        const files = await synthesizeCtSeries({
          dir: path.join(dir, `r${round}-${i}`),
          instances: INSTANCES,
        });
        const last = round === ROUNDS - 1;
        const tracer =
          STRACE !== undefined && last
            ? spawn('strace', ['-c', '-f', '-p', String(g.pid), '-o', `${STRACE}-${i}.txt`], {
                stdio: 'ignore',
              })
            : PERF !== undefined && last
              ? spawn(
                  'perf',
                  ['record', '-g', '-F', '2000', '-p', String(g.pid), '-o', `${PERF}-${i}.data`],
                  {
                    stdio: 'ignore',
                  },
                )
              : undefined;
        if (tracer !== undefined) await new Promise((r) => setTimeout(r, 500));
        const before = await cpu(g.pid);
        const rate = await send(g.port, files);
        const after = await cpu(g.pid);
        if (tracer !== undefined) {
          const gone = new Promise((r) => tracer.once('exit', r));
          tracer.kill('SIGINT');
          await gone;
        }
        await rm(path.dirname(files[0]!), { recursive: true, force: true });
        if (tracer !== undefined) continue; // traced: slower, not counted
        const r = results[i]!;
        r.user.push((after.user - before.user) / files.length);
        r.sys.push((after.sys - before.sys) / files.length);
        r.rate.push(rate);
        r.faults.push((after.minflt - before.minflt) / files.length);
        console.log(
          `round ${round} ${g.label}: user ${r.user.at(-1)!.toFixed(2)} + sys ` +
            `${r.sys.at(-1)!.toFixed(2)} ms/instance, ${rate.toFixed(0)} inst/s`,
        );
      }
    }
    console.log(`\n${ASSOCIATIONS} association(s), ${INSTANCES} instances a round; medians over rounds:`);
    gateways.forEach((g, i) => {
      const r = results[i]!;
      const total = r.user.map((u, k) => u + r.sys[k]!);
      console.log(
        `${g.label}: user ${median(r.user).toFixed(2)} + sys ${median(r.sys).toFixed(2)} = ` +
          `${median(total).toFixed(2)} CPU ms/instance (min ${Math.min(...total).toFixed(2)}, lower quartile ` +
          `${quartile(total).toFixed(2)}, max ${Math.max(...total).toFixed(2)}; user min ${Math.min(...r.user).toFixed(2)}), ` +
          `${median(r.rate).toFixed(0)} inst/s, ${median(r.faults).toFixed(1)} page faults/instance`,
      );
    });
    console.log(`load average: ${(await readFile('/proc/loadavg', 'utf8')).trim()}`);
  } finally {
    for (const g of gateways) await g.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
