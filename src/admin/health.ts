// Readiness: one check per dependency, each with a reason an admin can act on at 3 a.m.
import { runEvery } from '../util/periodic.ts';
import { randomBytes } from 'node:crypto';
import { open, statfs, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { errorMessage } from '../observability/error-message.ts';
import { keys, type WorkerHeartbeat } from '../pipeline/keys.ts';
import { redisTimeMs } from '../pipeline/redis.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { adminEvents } from './events.ts';

export interface CheckResult {
  ok: boolean;
  reason: string;
}

export interface ReadinessDeps {
  redis: Redis;
  prefix: string;
  spoolDir: string;
  /** The object store, asked to answer (its check()); absent: no storage check (tools, tests). */
  store?: ObjectStore;
  /** Free bytes below which ingest should stop (spool.minFreeBytes when configured). */
  minFreeBytes: number;
  /** A worker whose last heartbeat is older than this counts as gone. */
  workerStaleMs: number;
  /** Role 'all': whether the in-process inference worker is running (it counts before its first beat). */
  localWorkerRunning?: () => boolean;
  /** Per model queue: pending jobs and live workers with the model (queries.ts modelWorkers). */
  modelWorkers?: () => Promise<ModelCoverage[]>;
}

/** What readiness reads of each model queue (queries.ts ModelWorkers). */
export interface ModelCoverage {
  model: string;
  pending: number;
  workers: number;
  problem?: string;
}

export const WORKER_STALE_MS = 30_000;

function gib(bytes: number): string {
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

export async function checkRedis(redis: Redis): Promise<CheckResult> {
  const started = Date.now();
  try {
    const pong = await Promise.race([
      redis.ping(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer within 2 s')), 2000)),
    ]);
    return pong === 'PONG'
      ? { ok: true, reason: `PONG in ${Date.now() - started} ms` }
      : { ok: false, reason: `unexpected answer to PING: ${String(pong)}` };
  } catch (err) {
    return { ok: false, reason: `Redis does not answer: ${errorMessage(err)}` };
  }
}

/** The object store answers (the filesystem's directories are writable; the bucket is reachable). */
async function checkStore(store: ObjectStore): Promise<CheckResult> {
  try {
    await Promise.race([
      store.check(),
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error('no answer within 5 s')), 5000).unref(),
      ),
    ]);
    return { ok: true, reason: `${store.kind} store at ${store.location} answers` };
  } catch (err) {
    return { ok: false, reason: `${store.kind} store at ${store.location}: ${errorMessage(err)}` };
  }
}

/** Writes, fsyncs and deletes a probe file: exactly what storing an instance needs. */
async function checkSpoolWritable(spoolDir: string): Promise<CheckResult> {
  const probe = path.join(spoolDir, `.readyz-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const fh = await open(probe, 'wx');
    try {
      await fh.write('readyz probe\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await unlink(probe);
    return { ok: true, reason: `wrote, fsynced and deleted a probe file in ${spoolDir}` };
  } catch (err) {
    await unlink(probe).catch(() => undefined);
    return { ok: false, reason: `spool ${spoolDir} is not writable: ${errorMessage(err)}` };
  }
}

async function checkDisk(spoolDir: string, minFreeBytes: number): Promise<CheckResult> {
  try {
    const fs = await statfs(spoolDir);
    const free = fs.bavail * fs.bsize;
    return free >= minFreeBytes
      ? { ok: true, reason: `${gib(free)} free, watermark ${gib(minFreeBytes)}` }
      : {
          ok: false,
          reason: `only ${gib(free)} free on the spool disk, below the watermark of ${gib(minFreeBytes)}`,
        };
  } catch (err) {
    return { ok: false, reason: `cannot stat the spool disk: ${errorMessage(err)}` };
  }
}

/** Heartbeats are written by workers (keys.workers); parse defensively, since any process may write. */
export async function readHeartbeats(redis: Redis, prefix: string): Promise<WorkerHeartbeat[]> {
  const raw = await redis.hgetall(keys.workers(prefix));
  const out: WorkerHeartbeat[] = [];
  for (const value of Object.values(raw)) {
    try {
      const hb = JSON.parse(value) as Partial<WorkerHeartbeat>;
      if (typeof hb.workerId === 'string' && typeof hb.lastHeartbeat === 'number')
        out.push(hb as WorkerHeartbeat);
    } catch {
      // a malformed entry is ignored, not fatal
    }
  }
  return out;
}

async function checkWorkers(deps: ReadinessDeps): Promise<CheckResult> {
  const { redis, prefix, workerStaleMs: staleMs } = deps;
  try {
    // Heartbeats carry Redis time; staleness is judged on the same clock, not this host's.
    const [now, beats] = await Promise.all([redisTimeMs(redis), readHeartbeats(redis, prefix)]);
    const alive = beats.filter((b) => now - b.lastHeartbeat <= staleMs);
    if (alive.length > 0)
      return {
        ok: true,
        reason: `${alive.length} worker(s) alive: ${alive.map((b) => b.workerId).join(', ')}`,
      };
    if (deps.localWorkerRunning?.())
      return { ok: true, reason: 'the in-process inference worker is running (no fresh heartbeat yet)' };
    if (beats.length === 0) return { ok: false, reason: 'no inference worker has ever sent a heartbeat' };
    const newest = Math.max(...beats.map((b) => b.lastHeartbeat));
    return {
      ok: false,
      reason: `no inference worker alive: the newest heartbeat is ${Math.round((now - newest) / 1000)} s old (limit ${staleMs / 1000} s)`,
    };
  } catch (err) {
    return { ok: false, reason: `cannot read worker heartbeats: ${errorMessage(err)}` };
  }
}

/**
 * Ready means this process can do its job: a gateway can ingest (Redis, spool, disk). Whether an inference
 * worker is alive elsewhere is reported (checks.workers, and a warning when none is) but does not make a
 * gateway unready: studies wait in the queue until a worker comes, and an orchestrator must not stop
 * sending studies to a gateway, or restart it, because the workers are away. In role 'all' the in-process
 * worker is part of this process, so there it counts. A lone worker has its own /readyz (worker-app.ts).
 */
export async function readiness(deps: ReadinessDeps): Promise<{
  ready: boolean;
  checks: Record<string, CheckResult>;
  warnings: string[];
  /** Checks reported but not required (their failure is a warning): `workers` outside role all, `models`. */
  advisory: string[];
  models?: ModelCoverage[];
}> {
  const redis = await checkRedis(deps.redis);
  const unknown = { ok: false, reason: 'unknown: Redis does not answer' };
  const [spool, disk, workers, storage, coverage] = await Promise.all([
    checkSpoolWritable(deps.spoolDir),
    checkDisk(deps.spoolDir, deps.minFreeBytes),
    redis.ok ? checkWorkers(deps) : Promise.resolve(unknown),
    deps.store ? checkStore(deps.store) : undefined,
    redis.ok && deps.modelWorkers ? checkModels(deps.modelWorkers) : Promise.resolve(undefined),
  ]);
  const checks: Record<string, CheckResult> = {
    redis,
    spool,
    disk,
    workers,
    ...(storage ? { storage } : {}),
  };
  if (coverage) checks.models = coverage.check;
  const required = [
    redis,
    spool,
    disk,
    ...(storage ? [storage] : []),
    ...(deps.localWorkerRunning ? [workers] : []),
  ];
  const warnings = deps.localWorkerRunning || workers.ok ? [] : [`workers: ${workers.reason}`];
  for (const m of coverage?.models ?? [])
    if (m.problem) warnings.push(`models: ${m.problem} (${m.pending} job(s) waiting)`);
  const advisory = ['models', ...(deps.localWorkerRunning ? [] : ['workers'])];
  return {
    ready: required.every((c) => c.ok),
    checks,
    warnings,
    advisory,
    ...(coverage?.models ? { models: coverage.models } : {}),
  };
}

/**
 * Logs `no worker for model X` when jobs start to wait for a model no live worker has, and when it has one
 * again (each change once, checked every `everyMs`); returns the stop function. A failed read is skipped.
 */
export function watchModelWorkers(read: () => Promise<ModelCoverage[]>, everyMs = 5000): () => void {
  const missing = new Set<string>();
  const check = async () => {
    const models = await read();
    for (const m of models) {
      if (m.problem && !missing.has(m.model)) {
        missing.add(m.model);
        adminEvents.noWorkerForModel(m.model, m.pending, m.problem);
      } else if (!m.problem && missing.delete(m.model)) adminEvents.modelWorkerBack(m.model, m.workers);
    }
  };
  return runEvery(everyMs, check);
}

/**
 * Whether every model with jobs waiting has a live worker. Not required for readiness: the gateway still
 * ingests and routes, and the jobs wait in their model's queue (using no attempts) until a worker with the
 * model comes; an orchestrator must not restart a gateway for a worker that is missing elsewhere.
 */
async function checkModels(
  read: () => Promise<ModelCoverage[]>,
): Promise<{ check: CheckResult; models?: ModelCoverage[] }> {
  try {
    const models = await read();
    const missing = models.filter((m) => m.problem);
    if (missing.length === 0)
      return {
        check: {
          ok: true,
          reason: `every model with jobs waiting has a live worker (${models.length} model queue(s))`,
        },
        models,
      };
    return {
      check: {
        ok: false,
        reason: missing.map((m) => `${m.problem} (${m.pending} job(s) waiting)`).join('; '),
      },
      models,
    };
  } catch (err) {
    return { check: { ok: false, reason: `cannot read the model queues: ${errorMessage(err)}` } };
  }
}
