import type { Queue } from 'bullmq';
import { ROUTINE_PRIORITY } from '../config/schema.ts';
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
  /**
   * BullMQ priority of the routing job (lower runs first). Routine when unset (a reprocess, reconciliation):
   * BullMQ takes jobs without a priority before every prioritized one, STAT included.
   */
  priority = ROUTINE_PRIORITY,
): Promise<void> {
  await queue.add(
    STUDY_COMPLETE_JOB,
    { studyUid },
    {
      delay: quietPeriodMs,
      deduplication: { id: studyUid, reschedule: true, keepLastIfActive: true },
      priority,
    },
  );
}

/**
 * Raises the priority of the study's pending routing job (a re-arm keeps the priority the job was created
 * with): a STAT instance that arrives after routine ones of the same study still makes its routing overtake.
 */
async function raisePriority(
  queue: Queue<StudyCompleteJob>,
  studyUid: string,
  priority: number,
): Promise<void> {
  const id = await queue.getDeduplicationJobId(studyUid);
  if (!id) return;
  const job = await queue.getJob(id);
  if (!job || !['delayed', 'waiting', 'prioritized'].includes(await job.getState())) return;
  if (job.opts.priority !== undefined && job.opts.priority <= priority) return;
  await job.changePriority({ priority });
}

/**
 * The evidence says the study is whole (pipeline/mpps.ts): its pending study-complete job runs now instead
 * of at the end of the quiet period (same deduplication: a delayed job is rescheduled to now, a running
 * one is followed by a fresh one).
 */
export async function completeStudyNow(
  queue: Queue<StudyCompleteJob>,
  studyUid: string,
  priority?: number,
): Promise<void> {
  await rearmStudyComplete(queue, studyUid, 0, priority);
}

/** The longest a study's completion may come later than its quiet period for the sake of fewer re-arms. */
export const MAX_REARM_SLACK_MS = 250;

/** Studies remembered at most (a burst of this many studies at once still re-arms every one). */
const MAX_REMEMBERED = 10_000;

/**
 * Re-arms completion at most once per study every `slackMs`, instead of once per instance (each re-arm is a
 * Lua script in Redis). A re-arm at time `a` sets the delay to quiet period + slack, so the job fires at
 * a + quiet + slack; every instance of that study stored before a + slack is covered by it (it is at least
 * a quiet period before the job), and the first one after a + slack re-arms again. So the job still fires
 * no sooner than a quiet period after the LAST instance, and at most `slackMs` later than that. Instances
 * that rely on a re-arm still in flight wait for it and share its outcome: none is acknowledged before a
 * re-arm covering it is in Redis. A failed re-arm is forgotten, so the next instance tries again.
 */
export class CompletionArmer {
  private readonly armed = new Map<string, { until: number; done: Promise<void>; priority?: number }>();
  readonly slackMs: number;

  constructor(
    private readonly queue: Queue<StudyCompleteJob>,
    private readonly quietPeriodMs: number,
    slackMs = Math.min(MAX_REARM_SLACK_MS, Math.floor(quietPeriodMs / 4)),
    private readonly now: () => number = Date.now,
  ) {
    this.slackMs = Math.max(0, slackMs);
  }

  /**
   * Resolves once the study's completion is armed to fire no sooner than a quiet period from now, with
   * `priority` (the instance's, from the routing rules: ingestPriority) for its routing job. An instance
   * more urgent than the one that armed the job raises the job's priority at once.
   */
  instanceStored(studyUid: string, priority?: number): Promise<void> {
    const t = this.now();
    const current = this.armed.get(studyUid);
    const moreUrgent =
      priority !== undefined && current !== undefined && (current.priority ?? Infinity) > priority;
    if (current !== undefined && t < current.until && !moreUrgent) return current.done;
    if (this.armed.size >= MAX_REMEMBERED) this.forgetExpired(t);
    const rearmed = rearmStudyComplete(this.queue, studyUid, this.quietPeriodMs + this.slackMs, priority);
    const done = moreUrgent ? rearmed.then(() => raisePriority(this.queue, studyUid, priority)) : rearmed;
    const best =
      current?.priority !== undefined && (priority === undefined || current.priority < priority)
        ? current.priority
        : priority;
    const entry = { until: t + this.slackMs, done, ...(best !== undefined ? { priority: best } : {}) };
    this.armed.set(studyUid, entry);
    done.catch(() => {
      if (this.armed.get(studyUid) === entry) this.armed.delete(studyUid);
    });
    return done;
  }

  /** Drops what this process remembers of a study (e.g. after it was re-armed elsewhere with a shorter delay). */
  forget(studyUid: string): void {
    this.armed.delete(studyUid);
  }

  /**
   * The evidence says the study is whole: completion now (completeStudyNow), and this process forgets its
   * last re-arm of the study, so the next instance (a late one) re-arms at once instead of counting on a
   * job that has already run.
   */
  async completeNow(studyUid: string): Promise<void> {
    const priority = this.armed.get(studyUid)?.priority;
    this.armed.delete(studyUid);
    await completeStudyNow(this.queue, studyUid, priority);
    this.armed.delete(studyUid);
  }

  private forgetExpired(t: number): void {
    for (const [uid, entry] of this.armed) if (t >= entry.until) this.armed.delete(uid);
    // Still full: every entry is fresh; forgetting the oldest only costs an extra re-arm.
    if (this.armed.size >= MAX_REMEMBERED) this.armed.delete(this.armed.keys().next().value!);
  }
}
