import { Queue, type BulkJobOptions, type Job, type JobsOptions, type Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { GatewayConfig } from '../config/schema.ts';
import {
  DELIVERY_BACKOFF,
  QUEUE,
  type DeliveryJob,
  type InferenceJob,
  type StudyCompleteJob,
} from './jobs.ts';
import { pipelineEvents } from './events.ts';
import { keys } from './keys.ts';

export interface Queues {
  studyComplete: StudyQueue<StudyCompleteJob>;
  inference: StudyQueue<InferenceJob>;
  delivery: StudyQueue<DeliveryJob>;
  close(): Promise<void>;
}

/**
 * A queue whose every job belongs to a study, and which notes each job it adds in the study's job set
 * (keys.studyJobs, `<queue>/<jobId>`). Why: the console's study page, polled every 2 s, and the study's
 * cancel and retry actions must find a study's jobs without scanning thousands of jobs per queue and
 * state (and without missing the older ones a bounded scan would). Job ids are derived (jobs.ts) but not
 * all are known from the study alone: delivery ids name SR and SEG objects written later, and
 * study-complete jobs are deduplicated by study with BullMQ-made ids. Noting each id where it is added
 * covers every stage that adds jobs, as they all add through these queues. Readers look each noted job up
 * by id (Queue.getJob) and drop from the set the ids BullMQ has since removed, so the set stays as small
 * as what BullMQ keeps of the study; StudyIndex.forgetStudy deletes it with the study.
 */
// The data and name types are given explicitly: BullMQ's conditional defaults do not resolve for a generic T.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- BullMQ's own default result type
export class StudyQueue<T extends { studyUid: string }> extends Queue<T, any, string, T, any, string> {
  /** The last job id noted per study: re-arming a study's completion returns the same job again and again. */
  private readonly noted = new Map<string, string>();

  constructor(
    name: string,
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    defaultJobOptions: JobsOptions,
  ) {
    super(name, { connection: redis, prefix: keyPrefix, defaultJobOptions });
  }

  override async add(name: string, data: T, opts?: JobsOptions): Promise<Job<T>> {
    const job = await super.add(name, data, opts);
    await this.note([job]);
    return job;
  }

  override async addBulk(jobs: { name: string; data: T; opts?: BulkJobOptions }[]): Promise<Job<T>[]> {
    const added = await super.addBulk(jobs);
    await this.note(added);
    return added;
  }

  /** Best effort: the job is queued either way; a study page without it is better than a failed add. */
  private async note(jobs: Job<T>[]): Promise<void> {
    const fresh = jobs.filter((j) => j.id && this.noted.get(j.data.studyUid) !== j.id);
    if (fresh.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const j of fresh)
      pipeline.sadd(keys.studyJobs(this.keyPrefix, j.data.studyUid), `${this.name}/${j.id}`);
    try {
      for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err;
      if (this.noted.size > 10_000) this.noted.clear();
      for (const j of fresh) this.noted.set(j.data.studyUid, String(j.id));
    } catch (err) {
      pipelineEvents.studyJobNoteFailed(fresh[0]!.data.studyUid, err);
    }
  }
}

/** Failed jobs are kept for replay; completed ones are trimmed so Redis does not grow without bound. */
const KEEP = { removeOnComplete: { count: 1000, age: 7 * 24 * 3600 }, removeOnFail: false } as const;

/**
 * The study-complete queue. The ingest path opens its own over a fail-fast connection (createIngestRedis), so
 * that re-arming a study's completion during a Redis outage fails at once instead of queueing offline.
 */
export function createStudyCompleteQueue(
  connection: Redis,
  config: GatewayConfig,
): StudyQueue<StudyCompleteJob> {
  return new StudyQueue<StudyCompleteJob>(QUEUE.studyComplete, connection, config.redis.prefix, {
    ...KEEP,
    attempts: 5,
    backoff: { type: 'exponential', delay: 1000 },
  });
}

export function createQueues(connection: Redis, config: GatewayConfig): Queues {
  const prefix = config.redis.prefix;
  const studyComplete = createStudyCompleteQueue(connection, config);
  const inference = new StudyQueue<InferenceJob>(QUEUE.inference, connection, prefix, {
    ...KEEP,
    attempts: 3,
    backoff: { type: 'exponential', delay: 2000 },
  });
  const delivery = new StudyQueue<DeliveryJob>(QUEUE.delivery, connection, prefix, {
    ...KEEP,
    attempts: config.delivery.attempts,
    // Capped exponential (src/delivery/backoff.ts): the delivery worker registers the strategy.
    backoff: { type: DELIVERY_BACKOFF, delay: config.delivery.backoffMs },
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
