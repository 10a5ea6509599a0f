import { parentPort, workerData } from 'node:worker_threads';
import { Job, Queue } from 'bullmq';
import { connectRedis, type RedisTarget } from '../../pipeline/redis.ts';

// The lock renewer's thread: it extends the BullMQ lock of every job the main thread is running, on its
// own event loop and Redis connection, so a model whose session.run (or decoding) holds the main thread
// for longer than the lock does not have its job declared stalled and run a second time.

export type RenewerMessage =
  { kind: 'track'; jobId: string; token: string } | { kind: 'untrack'; jobId: string } | { kind: 'close' };

export interface RenewerData {
  redisTarget: RedisTarget;
  prefix: string;
  queueName: string;
  lockDurationMs: number;
}

const data = workerData as RenewerData;
const connection = connectRedis(data.redisTarget, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
connection.on('error', () => undefined);
const queue = new Queue(data.queueName, { connection, prefix: data.prefix });
const running = new Map<string, string>();

async function renew(): Promise<void> {
  for (const [jobId, token] of running) {
    const job = new Job(queue, 'renew', {}, {}, jobId);
    // 0: the lock is gone (the job finished meanwhile, or was taken over); stop renewing it.
    const extended = await job.extendLock(token, data.lockDurationMs).catch(() => undefined);
    if (extended === 0) running.delete(jobId);
  }
}

const timer = setInterval(() => void renew(), Math.max(Math.floor(data.lockDurationMs / 3), 100));

parentPort!.on('message', (message: RenewerMessage) => {
  if (message.kind === 'track') running.set(message.jobId, message.token);
  else if (message.kind === 'untrack') running.delete(message.jobId);
  else {
    clearInterval(timer);
    void queue
      .close()
      .catch(() => undefined)
      .finally(() => {
        connection.disconnect();
        parentPort!.close();
      });
  }
});
