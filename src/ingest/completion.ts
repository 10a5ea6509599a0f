import type { Queue } from 'bullmq';
import type { StudyCompleteJob } from '../queue/jobs.ts';

/**
 * Re-arms the study's "complete" job on every stored instance: BullMQ deduplication keyed by the study
 * keeps one delayed job and pushes its delay out (debounce). An instance that arrives while the job is
 * running is kept, and a fresh job follows, so late instances re-open the study.
 */
export async function touchStudy(
  queue: Queue<StudyCompleteJob>,
  studyUid: string,
  quietPeriodMs: number,
): Promise<void> {
  await queue.add(
    'complete',
    { studyUid },
    { delay: quietPeriodMs, deduplication: { id: studyUid, reschedule: true, keepLastIfActive: true } },
  );
}
