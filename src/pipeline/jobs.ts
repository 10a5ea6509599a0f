// Queue names, job payloads and job-id schemes: the contract between gateway and worker roles.

export const QUEUE = {
  studyComplete: 'study-complete',
  inference: 'inference',
  delivery: 'delivery',
} as const;

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
