import type { Queue } from 'bullmq';
import type { StudyCompleteJob } from './jobs.ts';

/** BullMQ job name of the study-complete job (the queue is QUEUE.studyComplete). */
export const STUDY_COMPLETE_JOB = 'study-complete';

/**
 * Re-arms the study's study-complete job on every stored instance: BullMQ deduplication keyed by the study
 * keeps one delayed job and pushes its delay out by the quiet period (debounce). An instance that arrives
 * while the job is running is kept, and a fresh job follows, so late instances re-open the study.
 */
export async function rearmStudyComplete(
  queue: Queue<StudyCompleteJob>,
  studyUid: string,
  quietPeriodMs: number,
): Promise<void> {
  await queue.add(
    STUDY_COMPLETE_JOB,
    { studyUid },
    { delay: quietPeriodMs, deduplication: { id: studyUid, reschedule: true, keepLastIfActive: true } },
  );
}

/**
 * The evidence says the study is whole (pipeline/mpps.ts): its pending study-complete job runs now instead
 * of at the end of the quiet period (same deduplication: a delayed job is rescheduled to now, a running
 * one is followed by a fresh one).
 */
export async function completeStudyNow(queue: Queue<StudyCompleteJob>, studyUid: string): Promise<void> {
  await rearmStudyComplete(queue, studyUid, 0);
}
