// Replaying failed deliveries (called by the admin API): failed jobs are kept (removeOnFail: false)
// and go back to the queue with their attempt counter reset, so a fixed destination gets the full
// retry window again.
import type { Queue } from 'bullmq';
import { errorMessage } from '../observability/error-message.ts';
import type { DeliveryJob } from '../pipeline/jobs.ts';

export interface ReplayFilter {
  destination?: string;
  studyUid?: string;
  /** Only jobs that failed at or after this time (ms since epoch). */
  failedSince?: number;
  /** At most this many jobs per call (default 1000). */
  limit?: number;
}

export interface ReplayResult {
  replayed: string[];
  /** Jobs that matched but could not be moved (e.g. replayed concurrently by someone else). */
  skipped: { id: string; reason: string }[];
}

export async function replayFailedDeliveries(
  queue: Queue<DeliveryJob>,
  filter: ReplayFilter = {},
): Promise<ReplayResult> {
  const limit = filter.limit ?? 1000;
  const result: ReplayResult = { replayed: [], skipped: [] };
  const pageSize = 200;
  // Retrying removes a job from the failed set, so always read the first page again.
  let offset = 0;
  while (result.replayed.length < limit) {
    const page = await queue.getFailed(offset, offset + pageSize - 1);
    if (page.length === 0) break;
    let movedOnPage = 0;
    for (const job of page) {
      if (!job?.id) continue;
      if (result.replayed.length >= limit) break;
      const d = job.data;
      if (filter.destination !== undefined && d.destination !== filter.destination) continue;
      if (filter.studyUid !== undefined && d.studyUid !== filter.studyUid) continue;
      if (filter.failedSince !== undefined && (job.finishedOn ?? 0) < filter.failedSince) continue;
      try {
        await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
        result.replayed.push(job.id);
        movedOnPage++;
      } catch (e) {
        result.skipped.push({ id: job.id, reason: errorMessage(e) });
      }
    }
    // Unmatched and skipped jobs stay in the failed set: page past them.
    offset += page.length - movedOnPage;
  }
  return result;
}
