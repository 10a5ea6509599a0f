import type { Job, Worker } from 'bullmq';
import { audit } from './audit-trail.ts';
import { errorMessage } from '../observability/error-message.ts';
import { pipelineEvents } from './events.ts';
import type { StudyIndex } from './study-index.ts';

/** A job that will not be tried again marks its study failed, with the reason, for the dashboard. */
export function markStudiesFailedOnFinalFailure(worker: Worker, index: StudyIndex, stage: string): void {
  worker.on('failed', (job: Job | undefined, err: Error) => {
    if (!job) return;
    const final = err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    const studyUid = (job.data as { studyUid?: string }).studyUid;
    pipelineEvents.jobFailed(stage, { jobId: job.id, studyUid, attempt: job.attemptsMade, final }, err);
    if (final && studyUid) {
      const reason = errorMessage(err);
      void index.setState(studyUid, 'failed', `${stage}: ${reason}`).catch(() => undefined);
      void audit.record({ type: 'failed', studyUid, stage, reason, jobId: String(job.id) });
    }
  });
}
