import { execFile } from 'node:child_process';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { log } from '../../src/log.ts';
import { keys, type WorkerHeartbeat } from '../../src/queue/keys.ts';

// The worker's heartbeat in Redis: every few seconds HSET <prefix>:workers <workerId> → JSON, so the
// admin console and /readyz see which workers are alive, which provider each model bound and what they
// have done. A worker that stops cleanly removes its entry; one that dies leaves an entry whose
// lastHeartbeat stops moving, which readers treat as stale.

export const HEARTBEAT_INTERVAL_MS = 5000;

export interface HeartbeatOptions {
  redis: Redis;
  prefix: string;
  concurrency: number;
  /** Execution provider actually bound, per model id. */
  providers: Record<string, string>;
  intervalMs?: number;
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
  private readonly startedAt = Date.now();
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
      this.beat().catch((err: unknown) =>
        log.warn({ event: 'heartbeat.failed', err: (err as Error).message }, 'heartbeat not written'),
      );
    }, this.opts.intervalMs ?? HEARTBEAT_INTERVAL_MS);
    this.timer.unref();
  }

  /** Counts a finished job and the images it read (shown on the next beat). */
  recordJob(images: number): void {
    this.jobsProcessed++;
    this.imagesProcessed += images;
  }

  snapshot(): WorkerHeartbeat {
    return {
      workerId: this.workerId,
      host: hostname(),
      pid: process.pid,
      gpu: this.gpu,
      providers: { ...this.opts.providers },
      models: Object.keys(this.opts.providers).sort(),
      concurrency: this.opts.concurrency,
      jobsProcessed: this.jobsProcessed,
      imagesProcessed: this.imagesProcessed,
      startedAt: this.startedAt,
      lastHeartbeat: Date.now(),
    };
  }

  private async beat(): Promise<void> {
    await this.opts.redis.hset(
      keys.workers(this.opts.prefix),
      this.workerId,
      JSON.stringify(this.snapshot()),
    );
  }

  /** Stops beating and removes this worker's entry. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.opts.redis.hdel(keys.workers(this.opts.prefix), this.workerId);
  }
}
