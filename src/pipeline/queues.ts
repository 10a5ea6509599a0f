import { Queue, type BulkJobOptions, type Job, type JobsOptions, type Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { GatewayConfig } from '../config/schema.ts';
import {
  DELIVERY_BACKOFF,
  QUEUE,
  inferenceQueueName,
  modelOfInferenceQueue,
  type DeliveryJob,
  type InferenceJob,
  type StudyCompleteJob,
} from './jobs.ts';
import { pipelineEvents } from './events.ts';
import { keys } from './keys.ts';

export interface Queues {
  studyComplete: StudyQueue<StudyCompleteJob>;
  inference: InferenceQueues;
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

const INFERENCE_JOB_OPTIONS: JobsOptions = {
  ...KEEP,
  attempts: 3,
  backoff: { type: 'exponential', delay: 2000 },
};

/**
 * The inference queues: one per model version (jobs.ts inferenceQueueName), so a worker takes only the jobs
 * of models it has loaded, and a job whose model no worker has waits without using its attempts. Which
 * queues exist is kept in a Redis set (keys.inferenceQueues), added to on every add and by each worker at
 * start; every reader (console, metrics, retention, bull-board) enumerates it with known(). The legacy
 * single queue is part of the set read, so jobs an older version left there stay visible until forwarded.
 */
export class InferenceQueues {
  private readonly open = new Map<string, StudyQueue<InferenceJob>>();
  readonly legacy: StudyQueue<InferenceJob>;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.legacy = new StudyQueue<InferenceJob>(QUEUE.inference, redis, prefix, INFERENCE_JOB_OPTIONS);
  }

  /** The queue of one model version (opened once per process). */
  forModel(modelId: string, modelVersion: string): StudyQueue<InferenceJob> {
    return this.byName(inferenceQueueName(modelId, modelVersion))!;
  }

  /** An inference queue by name (the legacy one or a per-model one); undefined for any other name. */
  byName(name: string): StudyQueue<InferenceJob> | undefined {
    if (name === QUEUE.inference) return this.legacy;
    if (!modelOfInferenceQueue(name)) return undefined;
    let queue = this.open.get(name);
    if (!queue) {
      queue = new StudyQueue<InferenceJob>(name, this.redis, this.prefix, INFERENCE_JOB_OPTIONS);
      this.open.set(name, queue);
    }
    return queue;
  }

  /**
   * A known inference queue by name: the legacy one, or a per-model one in the set of known queues; a
   * mistyped name is undefined (a 404 in the API), not an empty queue made up on the spot.
   */
  async find(name: string): Promise<StudyQueue<InferenceJob> | undefined> {
    const queue = this.byName(name);
    if (!queue || queue === this.legacy) return queue;
    return (await this.redis.sismember(keys.inferenceQueues(this.prefix), name)) ? queue : undefined;
  }

  /** Records queue names in the set of known inference queues (idempotent). */
  async register(names: string[]): Promise<void> {
    const valid = names.filter((n) => modelOfInferenceQueue(n) !== undefined);
    if (valid.length > 0) await this.redis.sadd(keys.inferenceQueues(this.prefix), ...valid);
  }

  /** Adds one job to its model's queue. */
  async add(data: InferenceJob, opts: JobsOptions): Promise<Job<InferenceJob>> {
    const [job] = await this.addBulk([{ data, opts }]);
    return job!;
  }

  /**
   * Adds jobs to their models' queues: one addBulk per queue. The queue is registered first, so a reader
   * never misses a queue that holds jobs (a registered queue without jobs only costs an empty read).
   */
  async addBulk(jobs: { data: InferenceJob; opts: BulkJobOptions }[]): Promise<Job<InferenceJob>[]> {
    const byQueue = new Map<string, { index: number; data: InferenceJob; opts: BulkJobOptions }[]>();
    jobs.forEach((j, index) => {
      const name = inferenceQueueName(j.data.modelId, j.data.modelVersion);
      let list = byQueue.get(name);
      if (!list) byQueue.set(name, (list = []));
      list.push({ index, ...j });
    });
    await this.register([...byQueue.keys()]);
    const out = new Array<Job<InferenceJob>>(jobs.length);
    await Promise.all(
      [...byQueue.entries()].map(async ([name, list]) => {
        const added = await this.byName(name)!.addBulk(
          list.map((j) => ({ name: 'infer', data: j.data, opts: j.opts })),
        );
        added.forEach((job, i) => (out[list[i]!.index] = job));
      }),
    );
    return out;
  }

  /** Every known inference queue, the legacy one first, then by name. */
  async known(): Promise<StudyQueue<InferenceJob>[]> {
    const names = (await this.redis.smembers(keys.inferenceQueues(this.prefix))).sort();
    return [this.legacy, ...names.map((n) => this.byName(n)).filter((q) => q !== undefined)];
  }

  async close(): Promise<void> {
    await Promise.all([this.legacy, ...this.open.values()].map((q) => q.close()));
  }
}

export function createQueues(connection: Redis, config: GatewayConfig): Queues {
  const prefix = config.redis.prefix;
  const studyComplete = createStudyCompleteQueue(connection, config);
  const inference = new InferenceQueues(connection, prefix);
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

/** Every queue, in pipeline order: study-complete, each known inference queue, delivery. */
export async function allQueues(queues: Queues): Promise<Queue[]> {
  return [queues.studyComplete, ...(await queues.inference.known()), queues.delivery];
}

/** A queue by name: study-complete, delivery, or a known inference queue; undefined for any other. */
export async function queueByName(queues: Queues, name: string): Promise<Queue | undefined> {
  if (name === queues.studyComplete.name) return queues.studyComplete;
  if (name === queues.delivery.name) return queues.delivery;
  return queues.inference.find(name);
}

/**
 * Closes a BullMQ worker: waits for its running jobs while Redis answers; while Redis is unreachable it
 * cannot finish them anyway (they go back to the queue as stalled), so it closes at once.
 */
export function closeWorker(worker: Worker, redis: Redis): Promise<void> {
  return worker.close(redis.status !== 'ready');
}
