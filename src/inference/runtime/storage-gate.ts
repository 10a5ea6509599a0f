import { randomBytes } from 'node:crypto';
import { open, unlink } from 'node:fs/promises';
import path from 'node:path';
import { DelayedError, type Job } from 'bullmq';
import { errorMessage } from '../../observability/error-message.ts';
import { withDeadline } from '../../util/deadline.ts';
import { inferenceEvents } from '../events.ts';

// A worker whose storage is unreachable cannot read a study's images nor write its reports: every job it
// took would fail and use an attempt. The gate probes the storage every few seconds; while the probe fails
// the worker's BullMQ workers are paused (they take no new job; the jobs already running finish or fail on
// their own, and are not lost), the worker's /readyz is 503 with the reason, and its heartbeat says it
// takes no jobs, so the gateway does not count it as a worker for its models.

/** What the gate pauses: a BullMQ Worker (pause(true) does not wait for the running jobs). */
export interface Pausable {
  pause(doNotWaitActive?: boolean): Promise<void>;
  resume(): void | Promise<void>;
}

export interface StorageGateOptions {
  /** Resolves when the storage is usable; rejects (with the reason) when not. */
  check: () => Promise<void>;
  /** How often the storage is probed. */
  intervalMs?: number;
  /** A probe that has not settled after this long counts as failed (a hung NFS mount, an S3 timeout). */
  timeoutMs?: number;
  /** Called after the storage became unreachable or reachable again (not on the first probe). */
  onChange?: (status: { ok: boolean; reason: string }) => void;
}

export const STORAGE_PROBE_INTERVAL_MS = 5000;
export const STORAGE_PROBE_TIMEOUT_MS = 10_000;

export class StorageGate {
  private readonly workers: Pausable[] = [];
  private state: { ok: boolean; reason: string } = { ok: false, reason: 'storage not probed yet' };
  private timer: NodeJS.Timeout | undefined;
  private probing: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly opts: StorageGateOptions) {}

  /** Whether the storage answered the last probe, and why not. */
  get status(): { ok: boolean; reason: string } {
    return { ...this.state };
  }

  /** Workers created with autorun: false; the gate starts them when the storage answers. */
  attach(worker: Pausable): void {
    this.workers.push(worker);
  }

  /** Probes once (the workers start only if the storage answers), then every interval. */
  async start(): Promise<void> {
    await this.probe();
    if (this.state.ok) await Promise.all(this.workers.map((w) => w.resume()));
    this.timer = setInterval(() => void this.probe(), this.opts.intervalMs ?? STORAGE_PROBE_INTERVAL_MS);
    this.timer.unref();
  }

  /** One probe now (concurrent callers share it); pauses or resumes the workers on a change. */
  probe(): Promise<void> {
    this.probing ??= this.probeOnce().finally(() => (this.probing = undefined));
    return this.probing;
  }

  /**
   * Runs a job's work only while the storage answers. BullMQ's pause stops new fetches, but a fetch already
   * blocked in Redis when the gate closed still hands over the next job: that job goes back to the queue
   * (delayed by one probe interval) without running and without using an attempt.
   */
  async guard<T>(job: Job, token: string | undefined, work: () => Promise<T>): Promise<T> {
    if (this.state.ok) return work();
    await job.moveToDelayed(Date.now() + (this.opts.intervalMs ?? STORAGE_PROBE_INTERVAL_MS), token);
    throw new DelayedError(this.state.reason);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async probeOnce(): Promise<void> {
    let next: { ok: boolean; reason: string };
    try {
      await withDeadline(this.opts.check(), this.opts.timeoutMs ?? STORAGE_PROBE_TIMEOUT_MS, 'storage check');
      next = { ok: true, reason: 'storage reachable' };
    } catch (err) {
      next = { ok: false, reason: `storage unreachable: ${errorMessage(err)}` };
    }
    if (this.stopped) return;
    const was = this.state;
    this.state = next;
    const first = was.reason === 'storage not probed yet';
    if (!next.ok && (was.ok || first)) {
      inferenceEvents.storageUnreachable(next.reason);
      // Not waiting for the running jobs: they go on (or fail on their own) and are not lost.
      await Promise.all(this.workers.map((w) => w.pause(true)));
      if (!first) this.opts.onChange?.(this.status);
    } else if (next.ok && !was.ok && !first) {
      inferenceEvents.storageReachable();
      await Promise.all(this.workers.map((w) => w.resume()));
      this.opts.onChange?.(this.status);
    }
  }
}

/**
 * The storage check of a worker on a filesystem data directory: writes, fsyncs and deletes a small probe
 * file, which is what writing a report needs, and fails where the directory is gone, read-only, full or
 * not a directory.
 */
export function dataDirCheck(dir: string): () => Promise<void> {
  return async () => {
    const probe = path.join(dir, `.worker-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      const fh = await open(probe, 'wx');
      try {
        await fh.write('worker storage probe\n');
        await fh.sync();
      } finally {
        await fh.close();
      }
    } finally {
      await unlink(probe).catch(() => undefined);
    }
  };
}
