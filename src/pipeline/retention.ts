// Retention: what the gateway keeps and for how long (config `retention`, on by default), so that disk and
// Redis stay flat under steady traffic. A pass walks EVERY study whose last instance is older than the
// shortest retention window, oldest first, in pages, and:
// - a study that is 'done' (every delivery of its last run landed) loses its spooled images spoolHours,
//   and its SRs/SEGs in the outbox outboxHours, after it was done, unless the delivery queue still holds an
//   open or failed job for it (a replay in progress, or a job an admin has not given up on);
// - a study that failed is kept failedDays after its last instance (for an admin to look and replay);
// - once its images are gone and studyRecordDays have passed, its Redis records go too;
// - files of the built-in folder destination go resultsDays after they were written;
// - failed queue jobs go failedJobDays after they failed (BullMQ's clean).
// Studies still in flight (receiving, queued, inferring, delivering) are never touched. Only the instances
// the index knew at the check are removed, and of those only the copy on disk that the record describes
// (ObjectStore.retire, then a compare-and-delete of the record): an instance re-sent meanwhile stays,
// with its record, and re-opens the study as usual.
import { readdir, rmdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Queue } from 'bullmq';
import type { InstanceRecord } from './instance-record.ts';
import type { StudyIndex, StudySummary } from './study-index.ts';
import { pipelineEvents } from './events.ts';
import { objectKey } from '../storage/object-keys.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import type { DeliveryJob } from './jobs.ts';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const PAGE = 500;

export interface RetentionPolicy {
  spoolMs: number;
  outboxMs: number;
  failedMs: number;
  failedJobMs: number;
  resultsMs: number;
  studyRecordMs: number;
}

/** The policy from config `retention` (hours and days), honouring the deprecated delivery.spoolRetentionHours. */
export function retentionPolicy(config: {
  retention: {
    spoolHours: number;
    outboxHours: number;
    failedDays: number;
    failedJobDays: number;
    resultsDays: number;
    studyRecordDays: number;
  };
  delivery: { spoolRetentionHours?: number };
}): RetentionPolicy {
  const r = config.retention;
  return {
    spoolMs: (config.delivery.spoolRetentionHours ?? r.spoolHours) * HOUR_MS,
    outboxMs: r.outboxHours * HOUR_MS,
    failedMs: r.failedDays * DAY_MS,
    failedJobMs: r.failedJobDays * DAY_MS,
    resultsMs: r.resultsDays * DAY_MS,
    studyRecordMs: r.studyRecordDays * DAY_MS,
  };
}

export interface RetentionDeps {
  index: StudyIndex;
  /** The spooled instances and the outbox (SRs and SEGs per study until delivered). */
  store: ObjectStore;
  deliveryQueue: Queue<DeliveryJob>;
  /** Every queue whose failed jobs age out (the pipeline queues; read at each pass, as model queues come and go). */
  queues: Queue[] | (() => Promise<Queue[]>);
  /** <dataDir>/results: the built-in folder destination (a destination, not storage: a local folder). */
  resultsDir: string;
  policy: RetentionPolicy;
  now?: () => number;
  /**
   * Aborted when this gateway stops being the maintenance holder (pipeline/maintenance-lease.ts): the pass
   * ends before its next study (an abort error), so two gateways never retire the same study at once.
   */
  signal?: AbortSignal;
  /** Test seam: runs after the last re-check and before any removal, where a re-send races retention. */
  afterRecheck?: (studyUid: string) => Promise<void>;
}

export interface RetentionResult {
  /** Studies whose spooled images were removed in this pass. */
  studies: string[];
  /** Spooled files removed. */
  files: number;
  /** Studies whose Redis records were forgotten. */
  forgotten: number;
  outboxStudies: number;
  resultFiles: number;
  failedJobs: number;
}

export async function runRetention(deps: RetentionDeps): Promise<RetentionResult> {
  const now = (deps.now ?? Date.now)();
  const p = deps.policy;
  const result: RetentionResult = {
    studies: [],
    files: 0,
    forgotten: 0,
    outboxStudies: 0,
    resultFiles: 0,
    failedJobs: 0,
  };
  const shortest = Math.min(p.spoolMs, p.outboxMs, p.failedMs, p.studyRecordMs);
  let open: Set<string> | undefined;
  for (let offset = 0; ;) {
    const uids = await deps.index.lastActiveBefore(now - shortest, offset, PAGE);
    let forgottenInPage = 0;
    // One pipelined read of the page's summaries (doneAt included), not two round trips per study.
    for (const study of await deps.index.many(uids)) {
      deps.signal?.throwIfAborted();
      const uid = study.studyUid;
      // A study no model took is as finished as a done one: its images serve no one.
      const done = study.state === 'done' || study.state === 'no-model';
      if (!done && study.state !== 'failed') continue;
      const since = done ? (study.doneAt ?? study.lastReceivedAt) : study.lastReceivedAt;
      const imagesDue = now - since >= (done ? p.spoolMs : p.failedMs);
      const outboxDue = now - since >= (done ? p.outboxMs : p.failedMs);
      if (!imagesDue && !outboxDue) continue;
      // Read the queue once per pass, only when some study is due.
      open ??= await studiesWithOpenDeliveries(deps.deliveryQueue);
      if (done && open.has(uid)) continue;
      if (outboxDue && (await deps.store.deletePrefix(objectKey.outboxPrefix(uid))) > 0)
        result.outboxStudies++;
      if (!imagesDue) continue;
      const removed = await retireStudyImages(deps, study);
      if (removed === undefined) continue;
      if (removed > 0) {
        result.studies.push(uid);
        result.files += removed;
      }
      const remaining = await deps.index.instances(uid);
      if (remaining.length === 0 && now - study.lastReceivedAt >= p.studyRecordMs) {
        if (await deps.index.forgetStudy(uid, study.lastReceivedAt)) {
          result.forgotten++;
          forgottenInPage++;
        }
      }
    }
    if (uids.length < PAGE) break;
    // Forgotten studies left the sorted set: the next page starts that much earlier.
    offset += uids.length - forgottenInPage;
  }
  deps.signal?.throwIfAborted();
  // The console's changed-studies set is trimmed by Redis time whether or not a console reads it.
  await deps.index.trimChanged();
  result.resultFiles = await removeOldFiles(deps.resultsDir, now - p.resultsMs);
  const queues = typeof deps.queues === 'function' ? await deps.queues() : deps.queues;
  for (const queue of queues) result.failedJobs += await cleanFailedJobs(queue, p.failedJobMs);
  pipelineEvents.retentionPass(result.files, result.forgotten, result.resultFiles, result.failedJobs);
  return result;
}

/**
 * Removes the spooled images of a study the index knew at the check; undefined when the study moved on
 * (an instance arrived since it was listed) and nothing was removed.
 */
async function retireStudyImages(deps: RetentionDeps, study: StudySummary): Promise<number | undefined> {
  const uid = study.studyUid;
  const instances = await deps.index.instances(uid);
  // Re-check right before deleting: an instance that arrived since the listing re-opened the study.
  const current = await deps.index.get(uid);
  if (current?.state !== study.state || current.lastReceivedAt !== study.lastReceivedAt) return undefined;
  await deps.afterRecheck?.(uid);
  const removed: InstanceRecord[] = [];
  for (const inst of instances) {
    try {
      // Only the copy the record describes goes: one re-sent since is kept, with its new record.
      const outcome = await deps.store.retire(objectKey.instance(inst), inst.receivedAt);
      if (outcome !== 'kept') removed.push(inst);
    } catch (e) {
      pipelineEvents.retentionError(uid, e);
    }
  }
  await deps.index.forgetInstances(uid, removed);
  if (removed.length > 0) pipelineEvents.retentionCleaned(uid, removed.length);
  return removed.length;
}

async function studiesWithOpenDeliveries(queue: Queue<DeliveryJob>): Promise<Set<string>> {
  const open = new Set<string>();
  // 'wait' covers paused queues too.
  for (const state of ['wait', 'delayed', 'active', 'failed', 'prioritized', 'waiting-children'] as const) {
    for (let start = 0; ; start += PAGE) {
      const jobs = await queue.getJobs([state], start, start + PAGE - 1);
      for (const job of jobs) if (job?.data?.studyUid) open.add(job.data.studyUid);
      if (jobs.length < PAGE) break;
    }
  }
  return open;
}

/** Files under dir/<study>/ written before `cutoff`; empty study folders go with them. */
async function removeOldFiles(dir: string, cutoff: number): Promise<number> {
  let removed = 0;
  const studies = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const study of studies) {
    if (!study.isDirectory()) continue;
    const studyDir = path.join(dir, study.name);
    for (const file of await readdir(studyDir, { withFileTypes: true }).catch(() => [])) {
      if (!file.isFile()) continue;
      const full = path.join(studyDir, file.name);
      const info = await stat(full).catch(() => undefined);
      if (info && info.mtimeMs <= cutoff) {
        await unlink(full).catch(() => undefined);
        removed++;
      }
    }
    await rmdir(studyDir).catch(() => undefined);
  }
  return removed;
}

/** BullMQ's clean, in bounded batches: failed jobs older than `ageMs` go. */
async function cleanFailedJobs(queue: Queue, ageMs: number): Promise<number> {
  let total = 0;
  for (;;) {
    const removed = await queue.clean(ageMs, 1_000, 'failed');
    total += removed.length;
    if (removed.length < 1_000) return total;
  }
}

/** A retention pass now and every `intervalMs`; returns the function that stops it. */
export function scheduleRetention(
  deps: Omit<RetentionDeps, 'now' | 'afterRecheck'>,
  intervalMs: number,
): () => void {
  let running = false;
  const pass = () => {
    if (running) return;
    running = true;
    void runRetention(deps)
      .catch((err: unknown) => {
        // A pass stopped because the maintenance lease was lost is not a failure.
        if (!deps.signal?.aborted) pipelineEvents.retentionFailed(err);
      })
      .finally(() => {
        running = false;
      });
  };
  pass();
  const timer = setInterval(pass, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
