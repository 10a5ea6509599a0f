// Runs the real CLI (`src/cli.ts`) as a child process with a generated YAML configuration, the way an
// admin runs it, so end-to-end tests cover start-up, configuration and shutdown too.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { Redis } from 'ioredis';
import { freePort, runTool, type ToolResult } from './dicom-tools.ts';
import { NODE_FLAGS } from '../../src/util/node-flags.ts';

export const REPO = path.resolve(import.meta.dirname, '../..');
export const SHARED = path.resolve(REPO, '../shared');
export const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface GatewayProcess {
  dimsePort: number;
  httpPort: number;
  dataDir: string;
  prefix: string;
  logPath: string;
  /** Process id of the running gateway (undefined while it is stopped). */
  readonly pid: number | undefined;
  api<T = unknown>(p: string): Promise<T>;
  /**
   * dcmtk storescu into this gateway as a modality (AE title MODALITY1 unless given), with TCP_NODELAY
   * on; `args` go before the address (e.g. '-xw' to propose a file's own transfer syntax).
   */
  store(files: string[], opts?: { aet?: string; args?: string[]; timeoutMs?: number }): Promise<ToolResult>;
  /** Starts the same configuration again (same ports, data directory and Redis prefix). */
  start(): Promise<void>;
  /** SIGTERM and wait; `kill` sends SIGKILL, as a power cut would. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Stops and removes the temp directory and Redis keys. */
  dispose(): Promise<void>;
}

/**
 * A models directory with the repository's manifests. The chest and brain models' weights stay in
 * ../shared: the directory holds symlinks to them, as an admin would place them.
 */
export async function makeModelsDir(models: ('cxr' | 'uniformity' | 'brain')[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-models-'));
  if (models.includes('cxr')) {
    const d = path.join(dir, 'squeezenet1_1-cxr-pneumonia');
    await mkdir(d);
    await copyFile(
      path.join(REPO, 'models/squeezenet1_1-cxr-pneumonia/model.json'),
      path.join(d, 'model.json'),
    );
    await symlink(
      path.join(SHARED, 'models/squeezenet1_1-cxr-pneumonia/squeezenet1_1_cxr.onnx'),
      path.join(d, 'squeezenet1_1_cxr.onnx'),
    );
  }
  if (models.includes('brain')) {
    const d = path.join(dir, 'meshnet-brain-gwm');
    await mkdir(d);
    await copyFile(path.join(REPO, 'models/meshnet-brain-gwm/model.json'), path.join(d, 'model.json'));
    await symlink(
      path.join(SHARED, 'models/meshnet-brain-gwm/gwm_light_fileorder.onnx'),
      path.join(d, 'gwm_light_fileorder.onnx'),
    );
  }
  if (models.includes('uniformity'))
    await symlink(path.join(REPO, 'models/image-uniformity'), path.join(dir, 'image-uniformity'));
  return dir;
}

export async function startGateway(opts: {
  config?: Record<string, unknown>;
  modelsDir: string;
  /** The CLI role (default 'all'). */
  role?: 'all' | 'gateway' | 'worker';
  /** Redis key prefix; default a random one of its own. Processes of one cluster share theirs. */
  prefix?: string;
  /** Environment variables added to the process's. */
  env?: Record<string, string>;
}): Promise<GatewayProcess> {
  const dir = await mkdtemp(path.join(tmpdir(), `aigw-e2e-${opts.role ?? 'all'}-`));
  // A dataDir given in config (another node's, or a link to it) is the one reported.
  const dataDir = (opts.config?.dataDir as string | undefined) ?? path.join(dir, 'data');
  const dimsePort = await freePort();
  const httpPort = await freePort();
  const prefix = opts.prefix ?? `aigw-e2e-${randomBytes(4).toString('hex')}`;
  const config = {
    dataDir,
    modelsDir: opts.modelsDir,
    study: { quietPeriodMs: 1000 },
    delivery: { attempts: 20, backoffMs: 200 },
    ...opts.config,
    // Settings given for worker add to the helper's; a lone worker serves its probes on the port the
    // helper waits on.
    worker: {
      concurrency: 2,
      ...(opts.config?.worker as Record<string, unknown> | undefined),
      ...(opts.role === 'worker' ? { httpPort } : {}),
    },
    // Settings given for redis (another server, sentinels) add to the helper's prefix.
    redis: {
      url: REDIS_URL,
      prefix,
      autoStart: false,
      ...(opts.config?.redis as Record<string, unknown> | undefined),
    },
    // Settings given for http (auth) add to the helper's host and port.
    http: {
      host: '127.0.0.1',
      port: httpPort,
      ...(opts.config?.http as Record<string, unknown> | undefined),
    },
    // Settings given for dimse add to the helper's own (its port is the one tests connect to).
    dimse: {
      aeTitle: 'AIGATEWAY',
      host: '127.0.0.1',
      port: dimsePort,
      ...(opts.config?.dimse as Record<string, unknown> | undefined),
    },
  };
  const configPath = path.join(dir, 'gateway.yaml');
  await writeFile(configPath, stringify(config));
  const logPath = path.join(dir, 'gateway.log');
  let child: ChildProcess | undefined;

  const base = `http://127.0.0.1:${httpPort}`;
  async function start(): Promise<void> {
    const out = createWriteStream(logPath, { flags: 'a' });
    child = spawn(
      process.execPath,
      [
        ...NODE_FLAGS,
        '--import',
        'tsx',
        path.join(REPO, 'src/cli.ts'),
        opts.role ?? 'all',
        '--config',
        configPath,
      ],
      {
        cwd: REPO,
        env: { ...process.env, LOG_LEVEL: 'debug', ...opts.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child.stdout!.pipe(out);
    child.stderr!.pipe(out);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) break;
      try {
        const res = await fetch(`${base}/readyz`);
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const tail = (await readFile(logPath, 'utf8').catch(() => '')).slice(-3000);
    throw new Error(`gateway did not become ready (exit code ${child.exitCode}):\n${tail}`);
  }

  async function stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill(signal);
    });
  }

  try {
    await start();
  } catch (err) {
    await stop('SIGKILL');
    if (!process.env.AIGW_KEEP_TEST_DIRS) await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    dimsePort,
    httpPort,
    dataDir,
    prefix,
    logPath,
    get pid() {
      return child?.exitCode === null && child.signalCode === null ? child.pid : undefined;
    },
    start,
    stop,
    store(files, storeOpts = {}) {
      return runTool(
        'storescu',
        [
          ...(storeOpts.args ?? []),
          '-aet',
          storeOpts.aet ?? 'MODALITY1',
          '-aec',
          'AIGATEWAY',
          '127.0.0.1',
          String(dimsePort),
          ...files,
        ],
        {
          env: { ...process.env, TCP_NODELAY: '1' },
          ...(storeOpts.timeoutMs !== undefined ? { timeoutMs: storeOpts.timeoutMs } : {}),
        },
      );
    },
    async api<T>(p: string): Promise<T> {
      const res = await fetch(`${base}${p}`);
      if (!res.ok) throw new Error(`GET ${p}: ${res.status}`);
      return (await res.json()) as T;
    },
    async dispose() {
      await stop('SIGTERM');
      const redis = new Redis(REDIS_URL);
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
      if (!process.env.AIGW_KEEP_TEST_DIRS) await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** SIGTERM, and how long the process took to exit (SIGKILL after `limitMs`, reported as Infinity). */
export async function sigtermExitMs(gateway: GatewayProcess, limitMs: number): Promise<number> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const stopped = await Promise.race([
    gateway.stop('SIGTERM').then(() => true),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), limitMs))),
  ]);
  clearTimeout(timer);
  if (!stopped) {
    await gateway.stop('SIGKILL');
    return Infinity;
  }
  return Date.now() - started;
}
