import type { Job, Queue, Worker } from 'bullmq';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

// One registry for the process, served at /metrics. Each metric is defined once, here, so names and labels
// stay consistent across roles.
export const metrics = new Registry();
collectDefaultMetrics({ register: metrics, prefix: 'aigw_' }); // aigw_process_*, aigw_nodejs_*

export const instancesReceived = new Counter({
  name: 'aigw_instances_received_total',
  help: 'Instances stored in the spool, by ingest path',
  labelNames: ['path'] as const,
  registers: [metrics],
});

export const studiesReceived = new Counter({
  name: 'aigw_studies_received_total',
  help: 'Studies whose first instance was stored (new in the study index)',
  registers: [metrics],
});

export const jobFailures = new Counter({
  name: 'aigw_job_failures_total',
  help: 'Jobs failed for good (no retry left), by pipeline stage and the calling AE title of the study',
  labelNames: ['stage', 'calling_ae'] as const,
  registers: [metrics],
});

export const reportsWritten = new Counter({
  name: 'aigw_reports_total',
  help: "Reports written, by model and whether a finding is positive (the positive rate drifting is a model's first sign of drift)",
  labelNames: ['model', 'positive'] as const,
  registers: [metrics],
});

export const bytesReceived = new Counter({
  name: 'aigw_bytes_received_total',
  help: 'Bytes of stored instances, by ingest path',
  labelNames: ['path'] as const,
  registers: [metrics],
});

export const associations = new Counter({
  name: 'aigw_associations_total',
  help: 'DIMSE associations, by result',
  labelNames: ['result'] as const,
  registers: [metrics],
});

export const inferenceSeconds = new Histogram({
  name: 'aigw_inference_seconds',
  help: 'Model run time per job (decode, preprocess, inference), by model and execution provider',
  labelNames: ['model', 'provider'] as const,
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  registers: [metrics],
});

export const stageSeconds = new Histogram({
  name: 'aigw_stage_seconds',
  help: 'Time spent in each pipeline stage',
  labelNames: ['stage'] as const,
  buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800],
  registers: [metrics],
});

export const executionProvider = new Gauge({
  name: 'aigw_execution_provider',
  help: '1 for the execution provider each loaded model actually bound',
  labelNames: ['model', 'provider'] as const,
  registers: [metrics],
});

export const deliveries = new Counter({
  name: 'aigw_deliveries_total',
  help: 'Report deliveries, by destination and result',
  labelNames: ['destination', 'result'] as const,
  registers: [metrics],
});

export const studyTurnaroundSeconds = new Histogram({
  name: 'aigw_study_turnaround_seconds',
  help: 'Receive → SR delivered, per SR and destination, by study priority lane and model',
  labelNames: ['priority', 'model'] as const,
  buckets: [1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600, 1800, 3600],
  registers: [metrics],
});

/** What the SLO gauges read at scrape time: each rule with a target and whether its last hour missed it. */
export type SloSource = () => Promise<
  { rule: string; breached: boolean; p95: number | null; targetP95Seconds: number }[]
>;
let sloSource: SloSource | undefined;

/**
 * One read shared by the gauges of a scrape: prom-client collects every metric at once, so gauges fed by
 * the same source await the same promise (dropped once it settles).
 */
function shared<T>(read: () => Promise<T>): () => Promise<T> {
  let inFlight: Promise<T> | undefined;
  return () =>
    (inFlight ??= read().finally(() => {
      inFlight = undefined;
    }));
}
const readSlos = shared(async () => (sloSource ? sloSource() : undefined));

/**
 * A gauge read at scrape time from a shared source: `series` gives each labelled value (null: absent).
 * When the source cannot be read (Redis away, a disk unreadable) the series keep their last values, and
 * /readyz reports the outage.
 */
function scrapedGauge<T, L extends string>(opts: {
  name: string;
  help: string;
  labelNames: readonly L[];
  read: () => Promise<T | undefined>;
  series: (source: T) => { labels: Partial<Record<L, string>>; value: number | null }[];
}): Gauge<L> {
  return new Gauge<L>({
    name: opts.name,
    help: opts.help,
    labelNames: opts.labelNames,
    registers: [metrics],
    async collect() {
      let source: T | undefined;
      try {
        source = await opts.read();
      } catch {
        return;
      }
      if (source === undefined) return;
      if (opts.labelNames.length > 0) this.reset();
      for (const { labels, value } of opts.series(source)) if (value !== null) this.set(labels, value);
    },
  });
}

// sloBreached: registered on the registry, read at scrape time.
scrapedGauge({
  name: 'aigw_slo_breached',
  help: "1 while a routing rule's turnaround SLO is missed (p95 over the last hour above its target), else 0",
  labelNames: ['rule'] as const,
  read: readSlos,
  series: (slos) => slos.map((s) => ({ labels: { rule: s.rule }, value: s.breached ? 1 : 0 })),
});

// sloP95: registered on the registry, read at scrape time.
scrapedGauge({
  name: 'aigw_slo_p95_seconds',
  help: "A routing rule's turnaround p95 over the last hour, seconds (absent without deliveries)",
  labelNames: ['rule'] as const,
  read: readSlos,
  series: (slos) => slos.map((s) => ({ labels: { rule: s.rule }, value: s.p95 })),
});

// sloTarget: registered on the registry, read at scrape time.
scrapedGauge({
  name: 'aigw_slo_target_seconds',
  help: "A routing rule's turnaround p95 target, seconds (routing.rules[].slo.p95Seconds)",
  labelNames: ['rule'] as const,
  read: readSlos,
  series: (slos) => slos.map((s) => ({ labels: { rule: s.rule }, value: s.targetP95Seconds })),
});

/** What the gateway role reads at scrape time for the alerts: workers, breakers, spool disk. */
export interface HealthSources {
  /** Inference workers with a fresh heartbeat (whichever host they run on). */
  workersAlive: () => Promise<number>;
  /** Each configured destination and whether its breaker is open or half-open. */
  breakers: () => Promise<{ destination: string; open: boolean }[]>;
  /** Free bytes on the spool's disk and the watermark below which ingest refuses instances. */
  spool: () => Promise<{ freeBytes: number; minFreeBytes: number }>;
  /**
   * Per known inference queue (one per model version): live workers taking jobs that have the model loaded,
   * and jobs waiting (waiting, prioritized, delayed) for it.
   */
  modelWorkers?: () => Promise<{ model: string; workers: number; pending: number }[]>;
}
let healthSources: HealthSources | undefined;
const readModelWorkers = shared(async () => healthSources?.modelWorkers?.());
const readSpool = shared(async () => (healthSources ? healthSources.spool() : undefined));

export const workersAlive = new Gauge({
  name: 'aigw_workers_alive',
  help: 'Inference workers with a fresh heartbeat in Redis, read at scrape time by the gateway',
  registers: [metrics],
  async collect() {
    if (!healthSources) return;
    try {
      this.set(await healthSources.workersAlive());
    } catch {
      // Redis away: keeps its last value; /readyz reports the outage.
    }
  },
});

export const maintenanceLeaseHeld = new Gauge({
  name: 'aigw_maintenance_lease_held',
  help: '1 while this gateway holds the maintenance lease (retention, reconcile, sweeps run here), else 0',
  registers: [metrics],
});

export const auditStreamDropped = new Counter({
  name: 'aigw_audit_stream_dropped_total',
  help: "Audit records not added to the cluster's Redis stream (Redis away, buffer full); each is in its node's segments",
  registers: [metrics],
});

export const associationLimitFallbacks = new Counter({
  name: 'aigw_association_limit_local_fallback_total',
  help: 'Associations admitted on local per-process limits because Redis did not answer the cluster-wide check in time',
  registers: [metrics],
});

export const breakerOpen = new Gauge({
  name: 'aigw_destination_breaker_open',
  help: "1 while a destination's circuit breaker is open or half-open (deliveries held back), else 0",
  labelNames: ['destination'] as const,
  registers: [metrics],
  async collect() {
    if (!healthSources) return;
    try {
      const states = await healthSources.breakers();
      this.reset();
      for (const b of states) this.set({ destination: b.destination }, b.open ? 1 : 0);
    } catch {
      // Redis away: the series keep their last values.
    }
  },
});

// modelWorkers: registered on the registry, read at scrape time.
scrapedGauge({
  name: 'aigw_inference_model_workers',
  help: 'Live inference workers taking jobs that have the model (<id>@<version>) loaded, per model queue',
  labelNames: ['model'] as const,
  read: readModelWorkers,
  series: (models) => models.map((m) => ({ labels: { model: m.model }, value: m.workers })),
});

// modelJobsPending: registered on the registry, read at scrape time.
scrapedGauge({
  name: 'aigw_inference_model_jobs_pending',
  help: "Inference jobs waiting (waiting, prioritized or delayed) in a model's queue",
  labelNames: ['model'] as const,
  read: readModelWorkers,
  series: (models) => models.map((m) => ({ labels: { model: m.model }, value: m.pending })),
});

// spoolFreeBytes: registered on the registry, read at scrape time.
scrapedGauge({
  name: 'aigw_spool_free_bytes',
  help: "Free bytes on the spool's disk, available to the gateway",
  labelNames: [] as const,
  read: readSpool,
  series: (s) => [{ labels: {}, value: s.freeBytes }],
});

// spoolMinFreeBytes: registered on the registry, read at scrape time.
scrapedGauge({
  name: 'aigw_spool_min_free_bytes',
  help: 'The spool watermark (spool.minFreeBytes): below it ingest refuses new instances',
  labelNames: [] as const,
  read: readSpool,
  series: (s) => [{ labels: {}, value: s.minFreeBytes }],
});

/** The gateway role registers where the alerts' health gauges come from. */
export function collectHealth(sources: HealthSources): void {
  healthSources = sources;
}

/** The role that serves the console registers where SLO status comes from (the turnaround log). */
export function collectSloStatus(source: SloSource): void {
  sloSource = source;
}

// Queue depths are read from BullMQ when Prometheus scrapes, so they are right whichever process moved
// the jobs. Roles that own queues register where to find them with collectQueueDepths: a function, since
// the per-model inference queues are found at each scrape (a model added since start has its queue).
let depthQueues: () => Promise<Queue[]> = async () => [];
const DEPTH_STATES = ['waiting', 'prioritized', 'active', 'delayed', 'failed', 'waiting-children'] as const;

export const queueDepth = new Gauge({
  name: 'aigw_queue_jobs',
  help: 'Jobs in each BullMQ queue, by state, read at scrape time',
  labelNames: ['queue', 'state'] as const,
  registers: [metrics],
  async collect() {
    let queues: Queue[];
    try {
      queues = await depthQueues();
    } catch {
      return;
    }
    for (const queue of queues) {
      try {
        const counts = await queue.getJobCounts(...DEPTH_STATES);
        for (const state of DEPTH_STATES) this.set({ queue: queue.name, state }, counts[state] ?? 0);
      } catch {
        // Redis away: the series keep their last values; /readyz reports the outage.
      }
    }
  },
});

export function collectQueueDepths(queues: () => Promise<Queue[]>): void {
  depthQueues = queues;
}

/**
 * Stage timings from a BullMQ worker's finished jobs: `<stage>_queue` is the wait from when the job became
 * due to when a worker took it, `<stage>` the processing time.
 */
export function observeStageTimings(worker: Worker, stage: string): void {
  worker.on('completed', (job: Job) => {
    if (job.processedOn === undefined || job.finishedOn === undefined) return;
    const due = job.timestamp + (job.opts.delay ?? 0);
    stageSeconds.observe({ stage: `${stage}_queue` }, Math.max(0, job.processedOn - due) / 1000);
    stageSeconds.observe({ stage }, Math.max(0, job.finishedOn - job.processedOn) / 1000);
  });
}
