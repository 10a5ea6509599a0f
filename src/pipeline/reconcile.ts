import type { Queue } from 'bullmq';
import { readInstanceHeader } from '../dicom/part10.ts';
import { pipelineEvents } from './events.ts';
import type { StudyCompleteJob } from './jobs.ts';
import { rearmStudyComplete } from './completion.ts';
import type { Spool } from '../storage/spool.ts';
import type { InstanceRecord, StudyIndex } from './study-index.ts';

/**
 * Start-up pass over the spool. Any instance on disk that the index does not know (Redis lost its data, or
 * the process died between the rename and the index write) is indexed again, and its study's completion
 * re-armed, so an acknowledged instance is never forgotten. Studies still receiving are re-armed too,
 * since their delayed completion job may have been lost with Redis.
 */
export async function reconcileSpool(
  spool: Spool,
  index: StudyIndex,
  studyCompleteQueue: Queue<StudyCompleteJob>,
  quietPeriodMs: number,
): Promise<{ studies: number; reindexed: number }> {
  let reindexed = 0;
  let rearmed = 0;
  const studies = await spool.listStudies();
  for (const studyUid of studies) {
    let added = 0;
    for (const series of await spool.listInstances(studyUid)) {
      for (const file of series.paths) {
        const sopInstanceUid = file.slice(file.lastIndexOf('/') + 1, -'.dcm'.length);
        if (await index.hasInstance(studyUid, sopInstanceUid)) continue;
        try {
          const h = await readInstanceHeader(file);
          const rec: InstanceRecord = {
            ...h,
            studyUid,
            seriesUid: series.seriesUid,
            sopInstanceUid,
            sopClassUid: h.sopClassUid ?? '',
            transferSyntaxUid: h.transferSyntaxUid ?? '',
            path: file,
            size: 0,
            callingAe: '',
            callingAddress: '',
            receivedAt: Date.now(),
          };
          await index.recordInstance(rec);
          added++;
        } catch (err) {
          pipelineEvents.reconcileUnreadable(studyUid, file, err);
        }
      }
    }
    reindexed += added;
    const state = (await index.get(studyUid))?.state;
    if (added > 0 || state === 'receiving') {
      await rearmStudyComplete(studyCompleteQueue, studyUid, quietPeriodMs);
      rearmed++;
    }
  }
  pipelineEvents.reconcileDone(studies.length, reindexed, rearmed);
  return { studies: studies.length, reindexed };
}
