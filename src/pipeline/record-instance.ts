import type { Queue } from 'bullmq';
import { withDeadline } from '../util/deadline.ts';
import { audit } from './audit-trail.ts';
import { completeStudyNow, rearmStudyComplete } from './completion.ts';
import { pipelineEvents } from './events.ts';
import type { InstanceRecord } from './instance-record.ts';
import type { StudyCompleteJob } from './jobs.ts';
import type { StudyIndex } from './study-index.ts';

export interface RecordInstanceDeps {
  index: StudyIndex;
  studyCompleteQueue: Queue<StudyCompleteJob>;
  quietPeriodMs: number;
  /** The sender is told to resend when indexing takes longer than this (default RECORD_DEADLINE_MS). */
  deadlineMs?: number;
}

/** Well inside any sender's DIMSE timeout, and well above a healthy Redis round trip. */
export const RECORD_DEADLINE_MS = 4000;

/**
 * What happens to every instance once it is durable in the spool, whichever front door it came through
 * (DIMSE, STOW-RS): it is indexed, noted in the audit trail, and its study's completion is re-armed. The
 * sender hears Success only after this resolves; if it throws, the sender is told to resend. It throws
 * within deadlineMs whatever Redis does (the file stays in the spool, and reconciliation indexes it later).
 */
export function createInstanceRecorder(deps: RecordInstanceDeps): (inst: InstanceRecord) => Promise<void> {
  const record = async (inst: InstanceRecord) => {
    const { evidenceComplete } = await deps.index.recordInstance(inst);
    audit.noteReceived(inst.studyUid, inst.callingAe, inst.callingAddress, inst.size);
    if (evidenceComplete) {
      // The last instance a completed MPPS announced: no need to wait for the quiet period.
      await completeStudyNow(deps.studyCompleteQueue, inst.studyUid);
      pipelineEvents.studyCompleteByEvidence(inst.studyUid, 'mpps');
    } else await rearmStudyComplete(deps.studyCompleteQueue, inst.studyUid, deps.quietPeriodMs);
  };
  return (inst) => withDeadline(record(inst), deps.deadlineMs ?? RECORD_DEADLINE_MS, 'indexing the instance');
}
