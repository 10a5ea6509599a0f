import { Queue, type ConnectionOptions, type Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { GatewayConfig } from '../config/schema.ts';
import {
  DELIVERY_BACKOFF,
  QUEUE,
  type DeliveryJob,
  type InferenceJob,
  type StudyCompleteJob,
} from './jobs.ts';

export interface Queues {
  studyComplete: Queue<StudyCompleteJob>;
  inference: Queue<InferenceJob>;
  delivery: Queue<DeliveryJob>;
  close(): Promise<void>;
}

/** Failed jobs are kept for replay; completed ones are trimmed so Redis does not grow without bound. */
const KEEP = { removeOnComplete: { count: 1000, age: 7 * 24 * 3600 }, removeOnFail: false } as const;

/**
 * The study-complete queue. The ingest path opens its own over a fail-fast connection (createIngestRedis), so
 * that re-arming a study's completion during a Redis outage fails at once instead of queueing offline.
 */
export function createStudyCompleteQueue(
  connection: ConnectionOptions,
  config: GatewayConfig,
): Queue<StudyCompleteJob> {
  return new Queue<StudyCompleteJob>(QUEUE.studyComplete, {
    connection,
    prefix: config.redis.prefix,
    defaultJobOptions: { ...KEEP, attempts: 5, backoff: { type: 'exponential', delay: 1000 } },
  });
}

export function createQueues(connection: ConnectionOptions, config: GatewayConfig): Queues {
  const prefix = config.redis.prefix;
  const studyComplete = createStudyCompleteQueue(connection, config);
  const inference = new Queue<InferenceJob>(QUEUE.inference, {
    connection,
    prefix,
    defaultJobOptions: { ...KEEP, attempts: 3, backoff: { type: 'exponential', delay: 2000 } },
  });
  const delivery = new Queue<DeliveryJob>(QUEUE.delivery, {
    connection,
    prefix,
    defaultJobOptions: {
      ...KEEP,
      attempts: config.delivery.attempts,
      // Capped exponential (src/delivery/backoff.ts): the delivery worker registers the strategy.
      backoff: { type: DELIVERY_BACKOFF, delay: config.delivery.backoffMs },
    },
  });
  return {
    studyComplete,
    inference,
    delivery,
    close: async () => {
      await Promise.all([studyComplete, inference, delivery].map((q) => q.close()));
    },
  };
}

/** The three queues, in pipeline order. */
export function allQueues(queues: Queues): Queue[] {
  return [queues.studyComplete, queues.inference, queues.delivery];
}

/**
 * Closes a BullMQ worker: waits for its running jobs while Redis answers; while Redis is unreachable it
 * cannot finish them anyway (they go back to the queue as stalled), so it closes at once.
 */
export function closeWorker(worker: Worker, redis: Redis): Promise<void> {
  return worker.close(redis.status !== 'ready');
}
