import type { Queue } from 'bullmq';
import { audit } from './audit-trail.ts';
import { rearmStudyComplete } from './completion.ts';
import type { InstanceRecord } from './instance-record.ts';
import type { StudyCompleteJob } from './jobs.ts';
import type { StudyIndex } from './study-index.ts';

export interface RecordInstanceDeps {
  index: StudyIndex;
  studyCompleteQueue: Queue<StudyCompleteJob>;
  quietPeriodMs: number;
}

/**
 * What happens to every instance once it is durable in the spool, whichever front door it came through
 * (DIMSE, STOW-RS): it is indexed, noted in the audit trail, and its study's completion is re-armed. The
 * sender hears Success only after this resolves; if it throws, the sender is told to resend.
 */
export function createInstanceRecorder(deps: RecordInstanceDeps): (inst: InstanceRecord) => Promise<void> {
  return async (inst) => {
    await deps.index.recordInstance(inst);
    audit.noteReceived(inst.studyUid, inst.callingAe, inst.callingAddress, inst.size);
    await rearmStudyComplete(deps.studyCompleteQueue, inst.studyUid, deps.quietPeriodMs);
  };
}
