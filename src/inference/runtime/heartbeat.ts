import { execFile } from 'node:child_process';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { keys, type WorkerHeartbeat } from '../../pipeline/keys.ts';
import { inferenceEvents } from '../events.ts';

// The worker's heartbeat in Redis: every few seconds HSET <prefix>:workers <workerId> → JSON, so the
// admin console and /readyz see which workers are alive, which provider each model bound and what they
// have done. A worker that stops cleanly removes its entry; one that dies leaves an entry whose
// lastHeartbeat stops moving, which readers treat as stale, and which the live workers delete once it
// is older than deadWorkerRetentionMs (a hash field cannot expire on its own in Redis 7.0), as does the
// gateway holding the maintenance lease (pruneDeadWorkers), so they go with no worker alive too. All these
// times are Redis's (TIME), never a host's.

export const HEARTBEAT_INTERVAL_MS = 5000;
/** How long a dead worker stays listed (as dead) before the live ones remove its entry. */
export const DEAD_WORKER_RETENTION_MS = 60 * 60 * 1000;

// Both scripts below end with this loop: entries whose beat is older than maxAge (Redis time), or that are no
// heartbeat at all, go from the hash (KEYS[1]) and are listed in out.
const PRUNE_LOOP = `
for i = 1, #entries, 2 do
  local ok, beat = pcall(cjson.decode, entries[i + 1])
  if not ok or type(beat) ~= 'table' or type(beat.lastHeartbeat) ~= 'number' or now - beat.lastHeartbeat > maxAge then
    redis.call('HDEL', KEYS[1], entries[i])
    out[#out + 1] = entries[i]
  end
end`;

// One script writes the beat and prunes, atomically (a beat landing between the read and the delete is
// never lost), and both use Redis's clock (TIME), not this host's: workers on several hosts, and the admin
// readers, then judge liveness on one clock, so a host whose clock is off neither looks dead nor prunes live
// workers (nor keeps dead ones). The beat's JSON comes without its two times; the script appends them.
// An entry that is not a heartbeat at all (unparseable, no timestamp) is removed too.
// KEYS[1] the workers hash; ARGV: workerId, beat JSON without lastHeartbeat/startedAt, startedAt (0: now),
// dead-worker retention ms. Returns { now, removed ids... }.
const BEAT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local started = tonumber(ARGV[3])
if not started or started <= 0 then started = now end
local body = string.sub(ARGV[2], 1, -2)
local sep = ','
if body == '{' then sep = '' end
redis.call('HSET', KEYS[1], ARGV[1],
  body .. sep .. '"startedAt":' .. string.format('%d', started) .. ',"lastHeartbeat":' .. string.format('%d', now) .. '}')
local maxAge = tonumber(ARGV[4])
local entries = redis.call('HGETALL', KEYS[1])
local out = { string.format('%d', started) }
${PRUNE_LOOP}
return out
`;

// The same pruning without a beat, for the gateway holding the maintenance lease: dead entries go even when
// no worker is alive to prune them. KEYS[1] the workers hash; ARGV: dead-worker retention ms. Returns the
// removed ids.
const PRUNE_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local maxAge = tonumber(ARGV[1])
local entries = redis.call('HGETALL', KEYS[1])
local out = {}
${PRUNE_LOOP}
return out
`;

/**
 * Removes the entries of workers dead for longer than `deadWorkerRetentionMs` (Redis time), as the live
 * workers' beats do; run by the gateway that holds the maintenance lease. Returns the removed ids.
 */
export async function pruneDeadWorkers(
  redis: Redis,
  prefix: string,
  deadWorkerRetentionMs = DEAD_WORKER_RETENTION_MS,
): Promise<string[]> {
  const removed = (await redis.eval(
    PRUNE_SCRIPT,
    1,
    keys.workers(prefix),
    deadWorkerRetentionMs,
  )) as string[];
  if (removed.length > 0) inferenceEvents.heartbeatPruned(removed);
  return removed;
}

export interface HeartbeatOptions {
  redis: Redis;
  prefix: string;
  concurrency: number;
  /** Execution provider actually bound, per model id. */
  providers: Record<string, string>;
  /** The models loaded, `<id>@<version>`: the gateway counts this worker for their queues. Defaults to the provider keys. */
  models?: string[];
  /** Whether the worker takes jobs now (false while its storage is unreachable), read at each beat. */
  accepting?: () => { ok: boolean; reason: string };
  intervalMs?: number;
  deadWorkerRetentionMs?: number;
  workerId?: string;
  /** GPU name; detected with nvidia-smi when not given. */
  gpu?: string;
}

/** Name of GPU 0 from nvidia-smi, or '' where there is no nvidia-smi or no GPU. */
export function detectGpu(timeoutMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    execFile(
      'nvidia-smi',
      ['--query-gpu=name', '--format=csv,noheader'],
      { timeout: timeoutMs },
      (err, stdout) => resolve(err ? '' : (stdout.split('\n')[0]?.trim() ?? '')),
    );
  });
}

export class WorkerHeartbeatPublisher {
  readonly workerId: string;
  /** Redis time of the first beat (0 until then): a worker's times are all on Redis's clock. */
  private startedAt = 0;
  private jobsProcessed = 0;
  private imagesProcessed = 0;
  private timer: NodeJS.Timeout | undefined;
  private gpu = '';

  constructor(private readonly opts: HeartbeatOptions) {
    this.workerId = opts.workerId ?? `${hostname()}:${process.pid}`;
  }

  /** Writes the first heartbeat before returning, then one every interval. */
  async start(): Promise<void> {
    this.gpu = this.opts.gpu ?? (await detectGpu());
    await this.beat();
    this.timer = setInterval(() => {
      this.beat().catch((err: unknown) => inferenceEvents.heartbeatFailed(err));
    }, this.opts.intervalMs ?? HEARTBEAT_INTERVAL_MS);
    this.timer.unref();
  }

  /** Beats now (a change of state is seen at once, not at the next interval). */
  async beatNow(): Promise<void> {
    await this.beat();
  }

  /** Counts a finished job and the images it read (shown on the next beat). */
  recordJob(images: number): void {
    this.jobsProcessed++;
    this.imagesProcessed += images;
  }

  /** What the next beat publishes, except its times (startedAt, lastHeartbeat), which Redis stamps. */
  snapshot(): Omit<WorkerHeartbeat, 'startedAt' | 'lastHeartbeat'> {
    const accepting = this.opts.accepting?.() ?? { ok: true, reason: '' };
    return {
      workerId: this.workerId,
      host: hostname(),
      pid: process.pid,
      gpu: this.gpu,
      providers: { ...this.opts.providers },
      models: [...(this.opts.models ?? Object.keys(this.opts.providers))].sort(),
      accepting: accepting.ok,
      ...(accepting.ok ? {} : { notAcceptingReason: accepting.reason }),
      concurrency: this.opts.concurrency,
      jobsProcessed: this.jobsProcessed,
      imagesProcessed: this.imagesProcessed,
    };
  }

  private async beat(): Promise<void> {
    const [started, ...removed] = (await this.opts.redis.eval(
      BEAT_SCRIPT,
      1,
      keys.workers(this.opts.prefix),
      this.workerId,
      JSON.stringify(this.snapshot()),
      this.startedAt,
      this.opts.deadWorkerRetentionMs ?? DEAD_WORKER_RETENTION_MS,
    )) as string[];
    this.startedAt = Number(started);
    if (removed.length > 0) {
      inferenceEvents.heartbeatPruned(removed);
    }
  }

  /** Stops beating and removes this worker's entry. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    // With Redis unreachable there is nothing to remove (the entry goes stale on its own): do not wait for it.
    if (this.opts.redis.status === 'ready')
      await this.opts.redis.hdel(keys.workers(this.opts.prefix), this.workerId);
  }
}
