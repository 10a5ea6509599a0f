// What the console shows, read from the study index, BullMQ, the audit summary and the records other
// roles write (worker heartbeats, associations, destination status). Those records come from other
// processes and versions, so they are parsed defensively: a malformed entry is skipped, never fatal.
import type { Job, JobState, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { StudyIndex, StudyState, StudySummary } from '../pipeline/study-index.ts';
import { modelOfInferenceQueue } from '../pipeline/jobs.ts';
import {
  keys,
  type AssociationRecord,
  type DestinationStatus,
  type WorkerHeartbeat,
} from '../pipeline/keys.ts';
import { allQueues, queueByName, type Queues } from '../pipeline/queues.ts';
import { redisTimeMs } from '../pipeline/redis.ts';
import { readHeartbeats } from './health.ts';

/**
 * A queue name the API accepts (for the OpenAPI pattern): a fixed queue, the legacy single inference queue,
 * or a per-model inference queue `inference.<model>@<version>` (they come and go with the models).
 */
export const QUEUE_NAME_PATTERN =
  '^(study-complete|inference|delivery|inference\\.[a-z0-9][a-z0-9._-]*@[0-9A-Za-z][0-9A-Za-z.+_-]*)$';
export const JOB_STATES: JobState[] = ['waiting', 'prioritized', 'delayed', 'active', 'failed', 'completed'];
const PENDING: JobState[] = ['waiting', 'prioritized', 'delayed'];
/** How many of each queue's most recent jobs per state the destinations page scans. */
const JOB_SCAN = 500;

export { queueByName };

export interface ModelOutcome {
  model: string;
  run: number;
  provider: string;
  srUid: string;
  inferenceMs: number;
}

/** Milliseconds per stage; null while a stage has not happened (or re-opened after it). */
export interface StageTimes {
  receiving: number | null;
  waiting: number | null;
  inference: number | null;
  delivery: number | null;
  total: number | null;
}

export interface StudyRow extends StudySummary {
  models: ModelOutcome[];
  stages: StageTimes;
  failure?: string;
}

function span(from: number | undefined, to: number | undefined): number | null {
  if (from === undefined || to === undefined || Number.isNaN(from) || Number.isNaN(to) || to < from)
    return null;
  return to - from;
}

function toRow(s: StudySummary, summary: Record<string, string>): StudyRow {
  const num = (k: string) => (summary[k] !== undefined ? Number(summary[k]) : undefined);
  const routedAt = num('routedAt');
  const inferredAt = num('inferredAt');
  const deliveredAt = num('deliveredAt');
  const failedAt = num('failedAt');
  const models: ModelOutcome[] = [];
  for (const [field, value] of Object.entries(summary)) {
    if (!field.startsWith('model:')) continue;
    try {
      const m = JSON.parse(value) as Omit<ModelOutcome, 'model'>;
      models.push({ model: field.slice('model:'.length), ...m });
    } catch {
      // skip a malformed summary field
    }
  }
  const finished =
    s.state === 'done' ? (deliveredAt ?? routedAt) : s.state === 'failed' ? failedAt : undefined;
  return {
    ...s,
    models,
    failure: s.state === 'failed' ? (summary.failure ?? s.detail) : undefined,
    stages: {
      receiving: span(s.firstReceivedAt, s.lastReceivedAt),
      waiting: span(s.lastReceivedAt, routedAt),
      inference: span(routedAt, inferredAt),
      delivery: span(inferredAt, deliveredAt),
      total: span(s.firstReceivedAt, finished),
    },
  };
}

export async function listStudies(
  redis: Redis,
  prefix: string,
  index: StudyIndex,
  filter: { state?: StudyState; q?: string; limit: number },
): Promise<StudyRow[]> {
  // Filtering happens after reading, so read more than the page when a filter is set.
  const scan = filter.state || filter.q ? Math.max(filter.limit * 5, 500) : filter.limit;
  const studies = await index.list(scan);
  const pipeline = redis.pipeline();
  for (const s of studies) pipeline.hgetall(keys.auditStudy(prefix, s.studyUid));
  const summaries = (await pipeline.exec()) ?? [];
  const q = filter.q?.toLowerCase();
  const rows: StudyRow[] = [];
  studies.forEach((s, i) => {
    const row = toRow(s, (summaries[i]?.[1] as Record<string, string> | null) ?? {});
    if (filter.state && row.state !== filter.state) return;
    if (
      q &&
      !row.studyUid.toLowerCase().includes(q) &&
      !row.callingAe.toLowerCase().includes(q) &&
      !row.models.some((m) => m.model.toLowerCase().includes(q))
    )
      return;
    rows.push(row);
  });
  return rows.slice(0, filter.limit);
}

export async function studyRow(
  redis: Redis,
  prefix: string,
  index: StudyIndex,
  studyUid: string,
): Promise<StudyRow | undefined> {
  const s = await index.get(studyUid);
  if (!s) return undefined;
  return toRow(s, await redis.hgetall(keys.auditStudy(prefix, studyUid)));
}

export interface JobView {
  queue: string;
  id: string;
  name: string;
  state: string;
  studyUid?: string;
  detail: string;
  attemptsMade: number;
  failedReason?: string;
  /** Why a pending job does not start: `no worker for model <id>@<version>` while no live worker has it. */
  blocked?: string;
  createdAt: number;
  processedOn?: number;
  finishedOn?: number;
}

function describe(job: Job): string {
  const d = job.data as Record<string, unknown>;
  if (typeof d.modelId === 'string') return `${d.modelId}@${String(d.modelVersion)} run ${String(d.run)}`;
  if (typeof d.destination === 'string') return `to ${d.destination}`;
  return 'complete study';
}

function view(queue: string, job: Job, state: string): JobView {
  return {
    queue,
    id: String(job.id),
    name: job.name,
    state,
    studyUid: (job.data as { studyUid?: string }).studyUid,
    detail: describe(job),
    attemptsMade: job.attemptsMade,
    failedReason: job.failedReason || undefined,
    createdAt: job.timestamp,
    processedOn: job.processedOn,
    finishedOn: job.finishedOn,
  };
}

export async function listJobs(queue: Queue, states: JobState[], limit: number): Promise<JobView[]> {
  const out: JobView[] = [];
  for (const state of states) {
    const jobs = await queue.getJobs([state], 0, limit - 1);
    for (const job of jobs) if (job) out.push(view(queue.name, job, state));
  }
  return out;
}

// Drops a job id from the study's job set only while BullMQ has no such job: one queued again under the
// same id meanwhile stays. KEYS: the study's job set, the job's BullMQ hash. ARGV: the member.
const FORGET_GONE_JOB = `
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.call('SREM', KEYS[1], ARGV[1]) end
return 0`;

/**
 * The study's jobs, newest first, looked up by id: the ids the queues noted in the study's job set
 * (queues.ts StudyQueue explains why), plus its pending study-complete job, which BullMQ deduplicates by
 * study. The cost is that study's jobs, not the queues' length. Ids BullMQ has removed (trimmed completed
 * jobs, cancelled ones) are dropped from the set as they are met.
 */
export async function jobsForStudy(
  redis: Redis,
  prefix: string,
  queues: Queues,
  studyUid: string,
  states = JOB_STATES,
): Promise<JobView[]> {
  const key = keys.studyJobs(prefix, studyUid);
  const [members, pendingComplete] = await Promise.all([
    redis.smembers(key),
    queues.studyComplete.getDeduplicationJobId(studyUid),
  ]);
  const refs = new Set(members);
  if (pendingComplete) refs.add(`${queues.studyComplete.name}/${pendingComplete}`);
  const found = await Promise.all(
    [...refs].map(async (ref): Promise<JobView | undefined> => {
      const slash = ref.indexOf('/');
      const queue = await queueByName(queues, ref.slice(0, slash));
      const id = ref.slice(slash + 1);
      if (!queue || !id) return undefined;
      const job = await queue.getJob(id);
      if (!job) {
        await redis.eval(FORGET_GONE_JOB, 2, key, queue.toKey(id), ref);
        return undefined;
      }
      if ((job.data as { studyUid?: string }).studyUid !== studyUid) return undefined;
      const state = await job.getState();
      return states.includes(state as JobState) ? view(queue.name, job, state) : undefined;
    }),
  );
  return found.filter((j): j is JobView => j !== undefined).sort((a, b) => b.createdAt - a.createdAt);
}

export async function pendingJobsForStudy(
  redis: Redis,
  prefix: string,
  queues: Queues,
  studyUid: string,
): Promise<JobView[]> {
  return jobsForStudy(redis, prefix, queues, studyUid, PENDING);
}

export interface QueueView {
  name: string;
  paused: boolean;
  counts: Record<string, number>;
}

export async function queueOverview(queues: Queues): Promise<QueueView[]> {
  return Promise.all(
    (await allQueues(queues)).map(async (q) => ({
      name: q.name,
      paused: await q.isPaused(),
      counts: await q.getJobCounts(...JOB_STATES),
    })),
  );
}

/** One model's inference queue: jobs waiting for it and the live workers that would take them. */
export interface ModelWorkers {
  /** `<id>@<version>`. */
  model: string;
  queue: string;
  /** Jobs waiting, prioritized or delayed (retries in backoff). */
  pending: number;
  /** Live workers (fresh heartbeat) taking jobs (storage reachable) that have the model loaded. */
  workers: number;
  /** Set while jobs wait and no worker would take them: `no worker for model <id>@<version>`. */
  problem?: string;
}

/** The words the console, /readyz and the log use for a model whose jobs wait without a worker. */
export function noWorkerFor(model: string): string {
  return `no worker for model ${model}`;
}

/**
 * Per known per-model inference queue: its pending jobs and the live workers that have its model. A job
 * whose model no live worker has waits in its queue without using attempts; this says so, for the console,
 * /readyz and the aigw_inference_model_workers gauge. A worker counts while its heartbeat is fresh and it
 * takes jobs (its storage answers). Workers of older versions list model ids without versions and take
 * from the legacy queue only, so they are not counted for a model queue.
 */
export async function modelWorkers(
  redis: Redis,
  prefix: string,
  queues: Queues,
  staleMs: number,
): Promise<ModelWorkers[]> {
  const [known, workers] = await Promise.all([queues.inference.known(), listWorkers(redis, prefix, staleMs)]);
  const taking = workers.filter((w) => w.alive && w.accepting !== false);
  const out = await Promise.all(
    known.map(async (q): Promise<ModelWorkers | undefined> => {
      const model = modelOfInferenceQueue(q.name);
      if (!model) return undefined;
      const counts = await q.getJobCounts(...PENDING);
      const pending = PENDING.reduce((n, state) => n + (counts[state] ?? 0), 0);
      const n = taking.filter((w) => w.models.includes(model)).length;
      return {
        model,
        queue: q.name,
        pending,
        workers: n,
        ...(pending > 0 && n === 0 ? { problem: noWorkerFor(model) } : {}),
      };
    }),
  );
  return out.filter((m): m is ModelWorkers => m !== undefined);
}

/** How many pending jobs of a model queue are read to find the studies waiting for a missing worker. */
const BLOCKED_SCAN = 1000;

/**
 * The studies whose inference jobs wait for a model no live worker has, with the reasons, for the worklist.
 * Reads only the queues of models without a worker (normally none), at most BLOCKED_SCAN jobs each.
 */
export async function studiesWaitingForWorkers(
  queues: Queues,
  coverage: ModelWorkers[],
): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const m of coverage) {
    if (!m.problem) continue;
    const queue = queues.inference.byName(m.queue);
    if (!queue) continue;
    for (const job of await queue.getJobs(PENDING, 0, BLOCKED_SCAN - 1)) {
      if (!job) continue;
      const reasons = out.get(job.data.studyUid) ?? [];
      if (!reasons.includes(m.problem)) reasons.push(m.problem);
      out.set(job.data.studyUid, reasons);
    }
  }
  return out;
}

/** Marks the pending jobs of models without a worker (the study page's job list). */
export function markBlockedJobs(jobs: JobView[], coverage: ModelWorkers[]): JobView[] {
  const problems = new Map(coverage.filter((m) => m.problem).map((m) => [m.queue, m.problem!]));
  return jobs.map((j) =>
    problems.has(j.queue) && PENDING.includes(j.state as JobState)
      ? { ...j, blocked: problems.get(j.queue)! }
      : j,
  );
}

export interface WorkerView extends WorkerHeartbeat {
  alive: boolean;
  /** Milliseconds since the last heartbeat, on Redis's clock (the browser's clock may be off too). */
  heartbeatAgeMs: number;
  /** Jobs per minute since the worker started. */
  jobsPerMinute: number;
}

export async function listWorkers(redis: Redis, prefix: string, staleMs: number): Promise<WorkerView[]> {
  // Heartbeats carry Redis time (TIME); staleness is judged on the same clock, read once per request.
  const [now, beats] = await Promise.all([redisTimeMs(redis), readHeartbeats(redis, prefix)]);
  return beats
    .map((hb) => {
      const minutes = Math.max((hb.lastHeartbeat - (hb.startedAt ?? hb.lastHeartbeat)) / 60_000, 1 / 60);
      return {
        ...hb,
        gpu: hb.gpu ?? '',
        providers: hb.providers ?? {},
        models: Array.isArray(hb.models) ? hb.models : [],
        alive: now - hb.lastHeartbeat <= staleMs,
        heartbeatAgeMs: Math.max(0, now - hb.lastHeartbeat),
        jobsPerMinute: Math.round(((hb.jobsProcessed ?? 0) / minutes) * 100) / 100,
      };
    })
    .sort((a, b) => a.workerId.localeCompare(b.workerId));
}

export interface DestinationView {
  name: string;
  kind: string;
  isDefault: boolean;
  health: 'ok' | 'failing' | 'unknown';
  status?: Partial<DestinationStatus>;
  backlog: number;
  failedJobs: number;
}

export async function listDestinations(
  redis: Redis,
  prefix: string,
  queues: Queues,
  configured: { name: string; kind: string; isDefault: boolean }[],
): Promise<DestinationView[]> {
  const raw = await redis.hgetall(keys.destinations(prefix));
  const backlog = new Map<string, number>();
  const failed = new Map<string, number>();
  for (const job of await listJobs(queues.delivery, [...PENDING, 'active'], JOB_SCAN)) {
    const d = job.detail.replace(/^to /, '');
    backlog.set(d, (backlog.get(d) ?? 0) + 1);
  }
  for (const job of await listJobs(queues.delivery, ['failed'], JOB_SCAN)) {
    const d = job.detail.replace(/^to /, '');
    failed.set(d, (failed.get(d) ?? 0) + 1);
  }
  return configured.map((c) => {
    let status: Partial<DestinationStatus> | undefined;
    try {
      status = raw[c.name] ? (JSON.parse(raw[c.name]!) as Partial<DestinationStatus>) : undefined;
    } catch {
      status = undefined;
    }
    const health: DestinationView['health'] = !status
      ? 'unknown'
      : status.breaker === 'open' || (status.consecutiveFailures ?? 0) > 0
        ? 'failing'
        : 'ok';
    return {
      ...c,
      health,
      status,
      backlog: backlog.get(c.name) ?? 0,
      failedJobs: failed.get(c.name) ?? 0,
    };
  });
}

export async function listAssociations(
  redis: Redis,
  prefix: string,
  limit: number,
): Promise<AssociationRecord[]> {
  const raw = await redis.lrange(keys.associations(prefix), 0, limit - 1);
  const out: AssociationRecord[] = [];
  for (const value of raw) {
    try {
      const a = JSON.parse(value) as Partial<AssociationRecord>;
      if (typeof a.callingAe === 'string' && typeof a.startedAt === 'number')
        out.push(a as AssociationRecord);
    } catch {
      // skip a malformed record
    }
  }
  return out;
}

/** Columns the study list sorts by. */
export const WORKLIST_SORTS = [
  'received',
  'callingAe',
  'modality',
  'description',
  'accession',
  'instances',
  'series',
  'state',
  'finding',
] as const;
export type WorklistSort = (typeof WORKLIST_SORTS)[number];

export interface WorklistQuery {
  state?: StudyState;
  modality?: string;
  callingAe?: string;
  /** A model id: studies this model reported on. */
  model?: string;
  /** Only studies with a positive finding. */
  positive?: boolean;
  /** Substring of the study UID, AE title, description, model (and accession when PHI is allowed). */
  q?: string;
  sort: WorklistSort;
  desc: boolean;
  offset: number;
  limit: number;
  /** The caller may see identifying data: it may be searched and sorted on. */
  phi: boolean;
}

export interface Worklist {
  total: number;
  offset: number;
  limit: number;
  rows: StudyRow[];
  /** Values present across all studies, for the filters. */
  facets: { modalities: string[]; callingAes: string[]; models: string[] };
  /** Milliseconds the server spent. */
  tookMs: number;
}

function sortValue(s: StudySummary, sort: WorklistSort): string | number {
  switch (sort) {
    case 'received':
      return s.firstReceivedAt;
    case 'callingAe':
      return s.callingAe;
    case 'modality':
      return s.modalities.join(',');
    case 'description':
      return s.description ?? '';
    case 'accession':
      return s.identity?.accessionNumber ?? '';
    case 'instances':
      return s.instanceCount;
    case 'series':
      return s.seriesCount;
    case 'state':
      return s.state;
    case 'finding':
      return Math.max(-1, ...s.findings.map((f) => (f.positive ? 1 : 0) + (f.top?.probability ?? 0)));
  }
}

/** Each sync also re-reads the changes of this long before the last one (same-millisecond writes, clock steps). */
const CLOCK_MARGIN_MS = 1000;
/** A cache not synced for this long reloads everything (the change set keeps an hour). */
const RELOAD_AFTER_MS = 30 * 60_000;

/**
 * Every study's summary, kept in this process and brought up to date on each read from the index's set of
 * changed studies: a poll re-reads only what changed since the last one (plus a clock margin), not all
 * 10,000 studies. Concurrent reads share one sync.
 */
export class StudyListCache {
  private readonly studies = new Map<string, StudySummary>();
  private cursor = 0;
  private syncedAt = 0;
  private syncing: Promise<void> | undefined;

  constructor(
    private readonly index: StudyIndex,
    private readonly now: () => number = Date.now,
  ) {}

  async snapshot(): Promise<StudySummary[]> {
    this.syncing ??= this.sync().finally(() => (this.syncing = undefined));
    await this.syncing;
    return [...this.studies.values()];
  }

  private async sync(): Promise<void> {
    const started = this.now();
    if (started - this.syncedAt > RELOAD_AFTER_MS) {
      // The baseline first: whatever changes while everything is read is re-read next time.
      const { now } = await this.index.changedSince(Number.MAX_SAFE_INTEGER);
      const all = await this.index.all();
      this.studies.clear();
      for (const s of all) this.studies.set(s.studyUid, s);
      this.cursor = now - CLOCK_MARGIN_MS;
    } else {
      const { uids, now } = await this.index.changedSince(this.cursor);
      const fresh = new Map((await this.index.many(uids)).map((s) => [s.studyUid, s]));
      for (const uid of uids) {
        const s = fresh.get(uid);
        if (s) this.studies.set(uid, s);
        else this.studies.delete(uid);
      }
      this.cursor = Math.max(this.cursor, now - CLOCK_MARGIN_MS);
    }
    this.syncedAt = started;
  }
}

/**
 * The console's study list: every study (from the cache) filtered, sorted and paged here; only the page's
 * rows get their audit summaries (stage times, model outcomes). PHI is left as stored: the API masks it.
 */
export async function worklist(
  redis: Redis,
  prefix: string,
  cache: StudyListCache,
  query: WorklistQuery,
): Promise<Worklist> {
  const started = performance.now();
  const all = await cache.snapshot();
  const modalities = new Set<string>();
  const aes = new Set<string>();
  const models = new Set<string>();
  for (const s of all) {
    for (const m of s.modalities) modalities.add(m);
    aes.add(s.callingAe);
    for (const f of s.findings) models.add(f.model);
  }
  const q = query.q?.toLowerCase();
  const matches = all.filter((s) => {
    if (query.state && s.state !== query.state) return false;
    if (query.modality && !s.modalities.includes(query.modality)) return false;
    if (query.callingAe !== undefined && s.callingAe !== query.callingAe) return false;
    if (query.model && !s.findings.some((f) => f.model === query.model)) return false;
    if (query.positive && !s.findings.some((f) => f.positive)) return false;
    if (q) {
      const hay = [
        s.studyUid,
        s.callingAe,
        s.description ?? '',
        ...s.findings.map((f) => `${f.model} ${f.top?.meaning ?? ''}`),
        ...(query.phi ? [s.identity?.accessionNumber ?? ''] : []),
      ];
      if (!hay.some((v) => v.toLowerCase().includes(q))) return false;
    }
    return true;
  });
  const sort = query.sort === 'accession' && !query.phi ? 'received' : query.sort;
  const dir = query.desc ? -1 : 1;
  matches.sort((a, b) => {
    const va = sortValue(a, sort);
    const vb = sortValue(b, sort);
    const c =
      typeof va === 'number' && typeof vb === 'number' ? va - vb : String(va).localeCompare(String(vb));
    return c * dir || b.lastReceivedAt - a.lastReceivedAt;
  });
  const page = matches.slice(query.offset, query.offset + query.limit);
  const summaries = await auditSummaries(redis, prefix, page);
  return {
    total: matches.length,
    offset: query.offset,
    limit: query.limit,
    rows: page.map((s, i) => toRow(s, summaries[i]!)),
    facets: {
      modalities: [...modalities].sort(),
      callingAes: [...aes].sort(),
      models: [...models].sort(),
    },
    tookMs: Math.round((performance.now() - started) * 10) / 10,
  };
}

async function auditSummaries(
  redis: Redis,
  prefix: string,
  studies: StudySummary[],
): Promise<Record<string, string>[]> {
  if (studies.length === 0) return [];
  const pipeline = redis.pipeline();
  for (const s of studies) pipeline.hgetall(keys.auditStudy(prefix, s.studyUid));
  const replies = (await pipeline.exec()) ?? [];
  return studies.map((_, i) => (replies[i]?.[1] as Record<string, string> | null) ?? {});
}
