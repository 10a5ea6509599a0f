import type { Queue } from 'bullmq';
import { withDeadline } from '../util/deadline.ts';
import { audit } from './audit-trail.ts';
import { CompletionArmer } from './completion.ts';
import type { CountRules } from './counts.ts';
import { pipelineEvents } from './events.ts';
import type { InstanceRecord } from './instance-record.ts';
import type { StudyCompleteJob } from './jobs.ts';
import type { StudyIndex } from './study-index.ts';
import type { TrendCounter } from './trends.ts';
import { studiesReceived } from '../observability/metrics.ts';

export interface RecordInstanceDeps {
  index: StudyIndex;
  studyCompleteQueue: Queue<StudyCompleteJob>;
  quietPeriodMs: number;
  /** The sender is told to resend when indexing takes longer than this (default RECORD_DEADLINE_MS). */
  deadlineMs?: number;
  /** At most this much later than the quiet period may completion fire (default: CompletionArmer's). */
  rearmSlackMs?: number;
  /** The armer shared with whatever else completes studies in this process (MPPS); one is made if absent. */
  armer?: CompletionArmer;
  /** The routing rules' completeWhen (study completion from the counts the images carry); none if absent. */
  countRules?: CountRules;
  /**
   * The priority of the instance's study from the routing rules (routing's ingestPriority, injected by the
   * gateway role); its routing job overtakes less urgent ones. BullMQ's default when absent.
   */
  priorityOf?: (inst: InstanceRecord) => number;
  /** Instances and new studies per minute for the console's trend charts, counted in memory. */
  trends?: TrendCounter;
}

/** Well inside any sender's DIMSE timeout, and well above a healthy Redis round trip. */
export const RECORD_DEADLINE_MS = 4000;

/**
 * What happens to every instance once it is durable in the spool, whichever front door it came through
 * (DIMSE, STOW-RS): it is indexed (and counted: pipeline/counts.ts), noted in the audit trail, and its
 * study's completion is re-armed (at most
 * once per study every few hundred ms: CompletionArmer). The index write and the re-arm go out together (one
 * round trip on the one connection; Redis runs the index write first). The sender hears Success only after
 * both resolve; if either throws, the sender is told to resend. It throws within deadlineMs whatever Redis
 * does (the file stays in the spool, and reconciliation indexes it later).
 */
export function createInstanceRecorder(deps: RecordInstanceDeps): (inst: InstanceRecord) => Promise<void> {
  const armer =
    deps.armer ?? new CompletionArmer(deps.studyCompleteQueue, deps.quietPeriodMs, deps.rearmSlackMs);
  const record = async (inst: InstanceRecord) => {
    const indexed = deps.index.recordInstance(inst, deps.countRules?.forInstance(inst));
    const armed = armer.instanceStored(inst.studyUid, deps.priorityOf?.(inst));
    // Both settle before we answer, so neither rejection is left unobserved.
    const [i, a] = await Promise.allSettled([indexed, armed]);
    if (i.status === 'rejected') throw i.reason;
    if (a.status === 'rejected') throw a.reason;
    audit.noteReceived(inst.studyUid, inst.callingAe, inst.callingAddress, inst.size);
    if (i.value.newStudy) studiesReceived.inc();
    deps.trends?.instance(i.value.newStudy);
    if (i.value.evidenceComplete) {
      // The last instance a completed MPPS announced, or the one that made the study whole by its counts
      // under a rule's completeWhen: no need to wait for the quiet period. After the re-arm above (same
      // connection, sent first), so this later, shorter delay is the one that stays.
      await armer.completeNow(inst.studyUid);
      pipelineEvents.studyCompleteByEvidence(inst.studyUid, i.value.evidence ?? 'mpps');
    }
  };
  return (inst) => withDeadline(record(inst), deps.deadlineMs ?? RECORD_DEADLINE_MS, 'indexing the instance');
}
