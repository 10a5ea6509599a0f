import type { Job, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { audit } from './audit-trail.ts';
import { errorMessage } from '../observability/error-message.ts';
import { pipelineEvents } from './events.ts';
import type { StudyIndex } from './study-index.ts';
import { recordTrend, trendField } from './trends.ts';
import { jobFailures } from '../observability/metrics.ts';

/** Where a final failure is counted for the trend charts (keys.trends); not counted when absent. */
export interface FailureTrends {
  redis: Redis;
  prefix: string;
}

/**
 * A job that will not be tried again marks its study failed, with the reason, for the dashboard, and is
 * counted by stage and by the study's calling AE (aigw_job_failures_total, and the console's trends).
 */
export function markStudiesFailedOnFinalFailure(
  worker: Worker,
  index: StudyIndex,
  stage: string,
  trends?: FailureTrends,
): void {
  worker.on('failed', (job: Job | undefined, err: Error) => {
    if (!job) return;
    const final = err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    const studyUid = (job.data as { studyUid?: string }).studyUid;
    pipelineEvents.jobFailed(stage, { jobId: job.id, studyUid, attempt: job.attemptsMade, final }, err);
    if (final && studyUid) {
      const reason = errorMessage(err);
      const run = (job.data as { run?: number }).run;
      void markFailed(index, studyUid, run, `${stage}: ${reason}`).catch(() => undefined);
      void audit.record({ type: 'failed', studyUid, stage, reason, jobId: String(job.id) });
    }
    if (final) void countFailure(index, stage, studyUid, trends);
  });
}

/** A job of an earlier run (a reprocess or a late instance started a new one) does not fail the current run. */
async function markFailed(
  index: StudyIndex,
  studyUid: string,
  run: number | undefined,
  detail: string,
): Promise<void> {
  if (run !== undefined && run !== (await index.currentRun(studyUid))) return;
  await index.setState(studyUid, 'failed', detail);
}

async function countFailure(
  index: StudyIndex,
  stage: string,
  studyUid: string | undefined,
  trends: FailureTrends | undefined,
): Promise<void> {
  let callingAe = '';
  try {
    if (studyUid) callingAe = await index.callingAe(studyUid);
  } catch {
    // Redis away: counted without the AE
  }
  jobFailures.inc({ stage, calling_ae: aeLabel(callingAe) });
  if (trends)
    await recordTrend(trends.redis, trends.prefix, trendField.failure(stage, callingAe)).catch(
      () => undefined,
    );
}

/** Distinct calling AEs given their own label value; later ones share 'other' (a bounded metric). */
const MAX_AE_LABELS = 100;
const aeLabels = new Set<string>();
function aeLabel(ae: string): string {
  if (aeLabels.has(ae)) return ae;
  if (aeLabels.size >= MAX_AE_LABELS) return 'other';
  aeLabels.add(ae);
  return ae;
}
