import { parentPort, workerData } from 'node:worker_threads';
import { Job, Queue } from 'bullmq';
import { connectRedis, type RedisTarget } from '../../pipeline/redis.ts';

// The lock renewer's thread: it extends the BullMQ lock of every job the main thread is running, on its
// own event loop and Redis connection, so a model whose session.run (or decoding) holds the main thread
// for longer than the lock does not have its job declared stalled and run a second time.

// One thread serves every inference queue of the worker (one per loaded model): each tracked job names
// its queue, and a job is keyed by queue and id, since ids are unique per queue only.
export type RenewerMessage =
  | { kind: 'track'; queueName: string; jobId: string; token: string }
  | { kind: 'untrack'; queueName: string; jobId: string }
  | { kind: 'close' };

export interface RenewerData {
  redisTarget: RedisTarget;
  prefix: string;
  lockDurationMs: number;
}

const data = workerData as RenewerData;
const connection = connectRedis(data.redisTarget, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
connection.on('error', () => undefined);
const queues = new Map<string, Queue>();
/** `<queue>/<jobId>` → the job's queue, id and lock token. */
const running = new Map<string, { queueName: string; jobId: string; token: string }>();

function queueOf(name: string): Queue {
  let queue = queues.get(name);
  if (!queue) queues.set(name, (queue = new Queue(name, { connection, prefix: data.prefix })));
  return queue;
}

async function renew(): Promise<void> {
  for (const [key, { queueName, jobId, token }] of running) {
    const job = new Job(queueOf(queueName), 'renew', {}, {}, jobId);
    // 0: the lock is gone (the job finished meanwhile, or was taken over); stop renewing it.
    const extended = await job.extendLock(token, data.lockDurationMs).catch(() => undefined);
    if (extended === 0 && running.get(key)?.token === token) running.delete(key);
  }
}

const timer = setInterval(() => void renew(), Math.max(Math.floor(data.lockDurationMs / 3), 100));

parentPort!.on('message', (message: RenewerMessage) => {
  if (message.kind === 'track') running.set(`${message.queueName}/${message.jobId}`, message);
  else if (message.kind === 'untrack') running.delete(`${message.queueName}/${message.jobId}`);
  else {
    clearInterval(timer);
    void Promise.all([...queues.values()].map((q) => q.close()))
      .catch(() => undefined)
      .finally(() => {
        connection.disconnect();
        parentPort!.close();
      });
  }
});
