// Optional spool retention (delivery.spoolRetentionHours; unset keeps everything). A study's spooled
// images go only when all of these hold: the study is 'done' (every delivery of its last run succeeded;
// a permanent failure leaves it 'failed' until an admin acts), it has been done for the retention
// period, and the delivery queue holds no unfinished or failed job for it (a replay in progress, or a
// job an admin has not given up on). Only the instances the index knew at the check are removed, and of
// those only the copy on disk that the record describes (Spool.retireInstance, a compare-and-delete of the
// record): an instance re-sent meanwhile stays, with its record, and re-opens the study as usual.
import type { Queue } from 'bullmq';
import type { InstanceRecord } from './instance-record.ts';
import type { StudyIndex } from './study-index.ts';
import { pipelineEvents } from './events.ts';
import type { Spool } from '../storage/spool.ts';
import type { DeliveryJob } from './jobs.ts';

export interface SpoolCleanupDeps {
  index: StudyIndex;
  spool: Spool;
  deliveryQueue: Queue<DeliveryJob>;
  retentionMs: number;
  now?: () => number;
  /** Test seam: runs after the last re-check and before any removal, where a re-send races retention. */
  afterRecheck?: (studyUid: string) => Promise<void>;
  /** Studies examined per pass (most recently active first are skipped: they are the least likely due). */
  maxStudies?: number;
}

export interface SpoolCleanupResult {
  studies: string[];
  files: number;
}

export async function cleanupDeliveredStudies(deps: SpoolCleanupDeps): Promise<SpoolCleanupResult> {
  const now = (deps.now ?? Date.now)();
  const result: SpoolCleanupResult = { studies: [], files: 0 };
  const studies = await deps.index.list(deps.maxStudies ?? 10_000);
  let pending: Set<string> | undefined;
  for (const study of studies) {
    if (study.state !== 'done') continue;
    const doneAt = await deps.index.doneAt(study.studyUid);
    if (doneAt === undefined || now - doneAt < deps.retentionMs) continue;
    // Read the queue once per pass, only when some study is due.
    pending ??= await studiesWithOpenDeliveries(deps.deliveryQueue);
    if (pending.has(study.studyUid)) continue;
    const instances = await deps.index.instances(study.studyUid);
    if (instances.length === 0) continue;
    // Re-check right before deleting: an instance that arrived since the listing re-opened the study.
    const current = await deps.index.get(study.studyUid);
    if (current?.state !== 'done' || current.lastReceivedAt !== study.lastReceivedAt) continue;
    await deps.afterRecheck?.(study.studyUid);
    const removed: InstanceRecord[] = [];
    for (const inst of instances) {
      if (inst.receivedAt > doneAt) continue;
      try {
        // Only the copy the record describes goes: one re-sent since is kept, with its new record.
        const outcome = await deps.spool.retireInstance(inst, inst.receivedAt);
        if (outcome !== 'kept') removed.push(inst);
      } catch (e) {
        pipelineEvents.retentionError(study.studyUid, e);
      }
    }
    await deps.index.forgetInstances(study.studyUid, removed);
    result.studies.push(study.studyUid);
    result.files += removed.length;
    pipelineEvents.retentionCleaned(study.studyUid, removed.length);
  }
  return result;
}

async function studiesWithOpenDeliveries(queue: Queue<DeliveryJob>): Promise<Set<string>> {
  const open = new Set<string>();
  const pageSize = 500;
  // 'wait' covers paused queues too.
  for (const state of ['wait', 'delayed', 'active', 'failed', 'prioritized', 'waiting-children'] as const) {
    for (let start = 0; ; start += pageSize) {
      const jobs = await queue.getJobs([state], start, start + pageSize - 1);
      for (const job of jobs) if (job?.data?.studyUid) open.add(job.data.studyUid);
      if (jobs.length < pageSize) break;
    }
  }
  return open;
}

/** Spool retention (off unless delivery.spoolRetentionHours is set): a pass now and every few minutes. */
export function scheduleSpoolRetention(
  deps: Omit<SpoolCleanupDeps, 'now' | 'maxStudies' | 'afterRecheck'>,
): () => void {
  const pass = () =>
    void cleanupDeliveredStudies(deps).catch((err: unknown) => pipelineEvents.retentionFailed(err));
  pass();
  const timer = setInterval(pass, Math.min(Math.max(deps.retentionMs / 10, 1_000), 300_000));
  timer.unref();
  return () => clearInterval(timer);
}
