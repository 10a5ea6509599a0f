// Named log events of the routing stage: one function per event, so every line has the same fields.
// UIDs and counts only, never patient data.
import { log } from '../observability/log.ts';

const routingLog = log.child({ component: 'routing' });

export const routingEvents = {
  /** A study was routed: `jobs` inference jobs queued for run `run` (none when no model accepts it). */
  studyRouted(studyUid: string, run: number, jobs: number, instances: number): void {
    routingLog.info(
      { event: 'routing.study.routed', studyUid, run, jobs, instances },
      jobs === 0 ? 'no model accepts this study' : 'study routed',
    );
  },
  /** The quiet period completed a study whose MPPS announced instances that never arrived. */
  studyIncomplete(studyUid: string, run: number, missing: number, openSteps: number): void {
    routingLog.warn(
      { event: 'routing.study.incomplete', studyUid, run, missing, openSteps },
      'study completed by the quiet period although its MPPS announced more',
    );
  },
};
