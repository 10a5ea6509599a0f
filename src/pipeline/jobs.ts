// Queue names, job payloads and job-id schemes: the contract between gateway and worker roles.

export const QUEUE = {
  studyComplete: 'study-complete',
  /**
   * The single inference queue of versions before workers by capability. Nothing adds to it any more;
   * workers forward what an older gateway left there to the per-model queues (inferenceQueueName).
   */
  inference: 'inference',
  delivery: 'delivery',
} as const;

/** Every per-model inference queue's name starts with this. */
export const INFERENCE_QUEUE_PREFIX = `${QUEUE.inference}.`;

// BullMQ forbids ':' in queue names (it joins keys with ':'); the study job set splits `<queue>/<jobId>` at
// the first '/', and the console puts the name in URL paths. Model ids and versions are kept to these
// characters by the manifest schema (src/models/manifest.ts uses these patterns), and a job's are checked
// again here, so every queue name is valid: no ':', no '/', and '@' only between id and version.
export const MODEL_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const MODEL_VERSION_PATTERN = /^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$/;
const MODEL_ID = MODEL_ID_PATTERN;
const MODEL_VERSION = MODEL_VERSION_PATTERN;

/**
 * The inference queue of one model version, `inference.<modelId>@<version>`: a worker takes jobs only from
 * the queues of the models it has loaded, so no job reaches a worker that cannot run it.
 */
export function inferenceQueueName(modelId: string, modelVersion: string): string {
  if (!MODEL_ID.test(modelId))
    throw new Error(`invalid model id for a queue name: ${JSON.stringify(modelId)}`);
  if (!MODEL_VERSION.test(modelVersion))
    throw new Error(`invalid model version for a queue name: ${JSON.stringify(modelVersion)}`);
  return `${INFERENCE_QUEUE_PREFIX}${modelId}@${modelVersion}`;
}

/** The model (`<id>@<version>`) of a per-model inference queue name, or undefined for any other name. */
export function modelOfInferenceQueue(name: string): string | undefined {
  if (!name.startsWith(INFERENCE_QUEUE_PREFIX)) return undefined;
  const model = name.slice(INFERENCE_QUEUE_PREFIX.length);
  const at = model.indexOf('@');
  if (at < 0 || !MODEL_ID.test(model.slice(0, at)) || !MODEL_VERSION.test(model.slice(at + 1)))
    return undefined;
  return model;
}

/** An inference queue: a per-model one, or the legacy single queue. */
export function isInferenceQueue(name: string): boolean {
  return name === QUEUE.inference || modelOfInferenceQueue(name) !== undefined;
}

/** The backoff type delivery jobs carry; the delivery worker registers the strategy for it. */
export const DELIVERY_BACKOFF = 'delivery-capped-exponential';

export interface StudyCompleteJob {
  studyUid: string;
}

export interface InferenceJob {
  studyUid: string;
  /** Series the model reads; instances are looked up in the study index. */
  seriesUids: string[];
  modelId: string;
  modelVersion: string;
  /** Destination names the resulting SR goes to. */
  destinations: string[];
  priority: number;
  /** Increments when a study is processed again; part of the job id so a re-run is a new job. */
  run: number;
  /**
   * When the run was asked for (ms since 1970): the study's first instance for its first run, else the
   * creation of the routing job (a late instance, a reprocess). Turnaround is measured from it.
   */
  receivedAt?: number;
  /** The routing rules that led to this work (their SLOs apply to its turnaround). */
  rules?: string[];
}

export interface DeliveryJob {
  studyUid: string;
  /** The processing run whose object this is (absent in jobs queued by older versions). */
  run?: number;
  sopInstanceUid: string;
  /*
   * No path: the object's key derives from studyUid + sopInstanceUid (objectKey.outbox), so any node that
   * reaches the store can deliver it. Jobs queued before the storage seam carry a `path` nobody reads; their
   * objects lie at the same key on the filesystem backend.
   */
  destination: string;
  /** What the object is, for the log; jobs queued before this field existed lack it. */
  kind?: 'sr' | 'seg';
  /** The model whose report this is, its study's priority, receipt time and rules (InferenceJob's). */
  model?: string;
  priority?: number;
  receivedAt?: number;
  rules?: string[];
}

// BullMQ forbids ':' in custom ids, so parts are joined with '|'.
export const jobId = {
  studyComplete: (studyUid: string) => `complete|${studyUid}`,
  inference: (j: Pick<InferenceJob, 'studyUid' | 'modelId' | 'modelVersion' | 'run'>) =>
    `infer|${j.studyUid}|${j.modelId}@${j.modelVersion}|${j.run}`,
  delivery: (sopInstanceUid: string, destination: string) => `deliver|${sopInstanceUid}|${destination}`,
};
