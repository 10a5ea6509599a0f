// Redis keys shared between roles, besides BullMQ's own. Every key starts with the configured prefix, so
// several gateways can share one Redis. Writers and readers both build keys here.

export const keys = {
  /** Sorted set: StudyInstanceUID scored by its last received time. Written by the study index. */
  studies: (prefix: string) => `${prefix}:studies`,
  /**
   * Sorted set: StudyInstanceUID scored by when its summary last changed (the writer's epoch ms), so the
   * console re-reads only the studies that changed since its last look. A forgotten study is noted too
   * (the reader drops it); entries older than an hour are trimmed. Written by the study index.
   */
  studiesChanged: (prefix: string) => `${prefix}:studies:changed`,
  /** Hash: one study's summary, state, run counters and last reports. Written by the study index. */
  study: (prefix: string, studyUid: string) => `${prefix}:study:${studyUid}`,
  /** Hash: SOPInstanceUID → JSON InstanceRecord. Written by the study index. */
  studyInstances: (prefix: string, studyUid: string) => `${prefix}:study:${studyUid}:instances`,
  /** Hash: SeriesInstanceUID → JSON SeriesRoutingRecord (body part used, each model's decision and why). Written by the study index. */
  studySeries: (prefix: string, studyUid: string) => `${prefix}:study:${studyUid}:series`,
  /** Hash: `<model>@<version>` → JSON ModelOutcome (images used and skipped, with why). Written by inference. */
  studyModels: (prefix: string, studyUid: string) => `${prefix}:study:${studyUid}:models`,
  /** Set: job ids whose settlement was counted, so a retried job settles once. Written by the study index. */
  studySettled: (prefix: string, studyUid: string) => `${prefix}:study:${studyUid}:settled`,
  /** Hash: per-study audit summary (received, routed, inferred, delivered, failure). Written by the audit trail. */
  auditStudy: (prefix: string, studyUid: string) => `${prefix}:audit:study:${studyUid}`,
  /**
   * Set: `<queue>/<jobId>` of every job queued for the study, for its page and actions without scanning
   * the queues. Written by the queues (queues.ts StudyQueue); ids BullMQ removed are dropped by readers.
   */
  studyJobs: (prefix: string, studyUid: string) => `${prefix}:study:${studyUid}:jobs`,
  /**
   * List (oldest first, newest 500 kept, expiring with the audit retention): the study's audit records as
   * the JSON lines of the segments, for its page without reading every segment. Written by the audit trail.
   */
  auditStudyEvents: (prefix: string, studyUid: string) => `${prefix}:audit:study:${studyUid}:events`,
  /**
   * Hash: one Modality Performed Procedure Step (state, studies, announced instances, reason), expiring
   * MPPS_TTL_S after its last update. Written by the MPPS store (pipeline/mpps.ts).
   */
  mpps: (prefix: string, mppsUid: string) => `${prefix}:mpps:${mppsUid}`,
  /**
   * Hash: the MPPS evidence of one study: `open` (steps not yet COMPLETED or DISCONTINUED), `completed`,
   * `discontinued` (counts), `reason` (the last discontinuation reason), `steps` (JSON list of step UIDs).
   * Written by the MPPS store; expires with the step.
   */
  studyMpps: (prefix: string, studyUid: string) => `${prefix}:study:${studyUid}:mpps`,
  /**
   * Set: SOP Instance UIDs a COMPLETED MPPS announced for the study that are not indexed yet. The study
   * index removes each instance as it records it (same MULTI). Written by the MPPS store and the index.
   */
  studyAwaiting: (prefix: string, studyUid: string) => `${prefix}:study:${studyUid}:awaiting`,
  /**
   * Hash: what the study's images say about their own number (pipeline/counts.ts), per series S:
   * `r:S` (the required-series conditions its first instance matched), `n:S` (distinct instances in),
   * `e:S` (Number of Series Related Instances, the largest seen), `m:S` (an enhanced multi-frame object came),
   * `ai:S:A` / `ax:S:A` (instances in, Images in Acquisition, per acquisition A), `ao:S` (acquisitions not yet
   * full); and `series` / `complete` (series held / complete by their counts). Written by the study index.
   */
  studyCounts: (prefix: string, studyUid: string) => `${prefix}:study:${studyUid}:counts`,
  /**
   * Hash (expires after 26 h, so the console can chart a day): one minute's SR deliveries (minute = ms since 1970 / 60 000), counted per
   * series (lane and model, or rule) and logarithmic turnaround bucket. Written by delivery through the
   * turnaround log (pipeline/turnaround.ts), read by the console and the SLO metric.
   */
  turnaround: (prefix: string, minute: number) => `${prefix}:turnaround:${minute}`,
  /**
   * Hash (expires after 26 h): one minute's activity for the console's trend charts (pipeline/trends.ts):
   * instances and new studies received, final job failures per stage and calling AE, reports and positive
   * reports per model, and the last sampled queue depths. Written by ingest (counted in memory, flushed
   * every few seconds), the failed-job hook, the study index (reports) and the gateway's queue sampler.
   */
  trends: (prefix: string, minute: number) => `${prefix}:trends:${minute}`,
  /**
   * Set: the names of the per-model inference queues (jobs.ts inferenceQueueName) that exist or existed, so
   * the console, metrics, retention and bull-board find them all. Added to by the queues on every add and by
   * each worker for the models it loaded; never trimmed (a queue of a retired model keeps its failed jobs).
   */
  inferenceQueues: (prefix: string) => `${prefix}:inference-queues`,
  /** Hash: workerId → JSON WorkerHeartbeat. Written by workers, read by the admin console and /readyz. */
  workers: (prefix: string) => `${prefix}:workers`,
  /** List (newest first, trimmed): JSON AssociationRecord. Written by the DIMSE SCP. */
  associations: (prefix: string) => `${prefix}:associations`,
  /** Hash: destination name → JSON DestinationStatus. Written by delivery. */
  destinations: (prefix: string) => `${prefix}:destinations`,
  /**
   * String with a TTL (PX): the instance id of the one gateway running cluster-wide maintenance (retention,
   * the periodic spool reconcile, the stale temp sweep, dead-worker pruning). Set with NX, renewed and
   * released only by its holder (compare-and-pexpire, compare-and-del). Written by the maintenance lease.
   */
  maintenanceLease: (prefix: string) => `${prefix}:maintenance:lease`,
  /**
   * Sorted set: the open DIMSE associations of the whole cluster counted against one limit (`total`, or
   * `peer:<calling AE>`), member = association id, score = when the entry expires (Redis ms). Refreshed while
   * the association lives; a crashed gateway's entries expire. Written by the association slots.
   */
  associationSlots: (prefix: string, scope: string) => `${prefix}:dimse:slots:${scope}`,
  /**
   * Stream (MAXLEN ~ audit.streamMaxLen): every audit record of every gateway and worker, field `node` (the
   * writing process's instance id) and `rec` (the JSON line, as in the local segment). The cluster view of
   * the audit trail; the fsync'd segments stay the durable per-node copy. Written by the audit trail.
   */
  auditStream: (prefix: string) => `${prefix}:audit:stream`,
  /** String with a TTL: held by the one delivery probing a half-open destination. Written by delivery. */
  breakerProbe: (prefix: string, destination: string) => `${prefix}:destinations:probe:${destination}`,
};

export interface WorkerHeartbeat {
  workerId: string;
  host: string;
  pid: number;
  /** e.g. 'NVIDIA H200' or '' when none. */
  gpu: string;
  /** Execution provider actually bound, per model id. */
  providers: Record<string, string>;
  /** The models loaded, `<id>@<version>` (model ids only in heartbeats of older versions). */
  models: string[];
  /**
   * Whether the worker takes jobs now; false while its storage is unreachable (the reason says why).
   * Absent in heartbeats of older versions, which always took jobs.
   */
  accepting?: boolean;
  notAcceptingReason?: string;
  concurrency: number;
  jobsProcessed: number;
  imagesProcessed: number;
  startedAt: number;
  lastHeartbeat: number;
}

export interface AssociationRecord {
  callingAe: string;
  calledAe: string;
  address: string;
  startedAt: number;
  durationMs: number;
  stored: number;
  failed: number;
  /** 'accepted' | 'rejected' | 'aborted' and why when rejected. */
  result: string;
  reason?: string;
}

export interface DestinationStatus {
  name: string;
  kind: string;
  /** Circuit breaker state. */
  breaker: 'closed' | 'open' | 'half-open';
  lastSuccessAt?: number;
  lastErrorAt?: number;
  lastError?: string;
  consecutiveFailures: number;
  /** When the breaker last opened; it lets a probe through after the configured cool-down. */
  openedAt?: number;
}
