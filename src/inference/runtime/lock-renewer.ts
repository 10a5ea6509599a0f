import type { Worker } from 'node:worker_threads';
import type { RenewerData, RenewerMessage } from './lock-renewer-thread.ts';
import { siblingModule, startModuleThread } from './thread-entry.ts';

/**
 * Keeps the BullMQ locks of running jobs alive from a thread of its own. BullMQ renews a lock from the
 * worker's event loop; a long session.run or decode that holds that loop past the lock duration would let
 * the stalled-job check hand the job to another worker, so the model would run twice. Each job is tracked
 * while its processor runs (its token is the one BullMQ gave the processor). One thread serves every
 * queue of the worker (one per loaded model): a thread and a Redis connection per model would cost more
 * and renew nothing more, since each tracked job names its queue.
 */
export class LockRenewer {
  private readonly thread: Worker;

  constructor(data: RenewerData) {
    this.thread = startModuleThread(siblingModule('lock-renewer-thread', import.meta.url), { ...data });
    this.thread.unref();
  }

  /** Runs `work` with the lock of job `jobId` of `queueName` renewed off the main thread until it settles. */
  async hold<T>(
    queueName: string,
    jobId: string | undefined,
    token: string | undefined,
    work: () => Promise<T>,
  ): Promise<T> {
    if (!jobId || !token) return work();
    this.post({ kind: 'track', queueName, jobId, token });
    try {
      return await work();
    } finally {
      this.post({ kind: 'untrack', queueName, jobId });
    }
  }

  async close(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.thread.once('exit', () => resolve()));
    this.post({ kind: 'close' });
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, 2_000).unref());
    await Promise.race([exited, timeout]);
    await this.thread.terminate();
  }

  private post(message: RenewerMessage): void {
    this.thread.postMessage(message);
  }
}
