import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { readInstanceHeader } from '../dicom/part10.ts';
import { pipelineEvents } from './events.ts';
import type { StudyCompleteJob } from './jobs.ts';
import { rearmStudyComplete } from './completion.ts';
import type { Spool } from '../storage/spool.ts';
import type { InstanceRecord, StudyIndex } from './study-index.ts';

/**
 * Pass over the spool (at start-up, when Redis comes back, and periodically). Any instance on disk that the
 * index does not know (Redis lost its data, or the process died between the rename and the index write, or
 * the index write failed during an outage) is indexed again, and its study's completion re-armed, so an
 * acknowledged instance is never forgotten. With `rearmReceiving`, studies still receiving are re-armed too,
 * since their delayed completion job may have been lost with Redis.
 */
export async function reconcileSpool(
  spool: Spool,
  index: StudyIndex,
  studyCompleteQueue: Queue<StudyCompleteJob>,
  quietPeriodMs: number,
  { rearmReceiving = true }: { rearmReceiving?: boolean } = {},
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
    if (added > 0 || (rearmReceiving && state === 'receiving')) {
      await rearmStudyComplete(studyCompleteQueue, studyUid, quietPeriodMs);
      rearmed++;
    }
  }
  pipelineEvents.reconcileDone(studies.length, reindexed, rearmed);
  return { studies: studies.length, reindexed };
}

export interface SpoolReconcilerOptions {
  spool: Spool;
  index: StudyIndex;
  studyCompleteQueue: Queue<StudyCompleteJob>;
  quietPeriodMs: number;
  /** The connection the index uses: a 'ready' after it was lost means Redis may have come back empty. */
  redis: Redis;
  /** A pass this often as well, whatever Redis did. */
  intervalMs: number;
  /**
   * One pass at once, re-arming studies still receiving as after an outage: for a gateway that has just
   * become the maintenance holder and does not know what Redis went through before (pipeline/maintenance.ts).
   */
  passAtStart?: boolean;
}

/**
 * Keeps the index in step with the spool while the gateway runs: a pass each time Redis comes back after a
 * lost connection (it may have restarted without persistence), and one every intervalMs. Passes never
 * overlap; a trigger during a pass runs one more pass after it. Returns stop(), which waits for a running pass.
 */
export function startSpoolReconciler(opts: SpoolReconcilerOptions): () => Promise<void> {
  let running: Promise<void> | undefined;
  let again: 'redis-back' | 'periodic' | undefined;
  let stopped = false;
  const run = (trigger: 'redis-back' | 'periodic') => {
    if (stopped) return;
    if (running) {
      again = again === 'redis-back' ? again : trigger;
      return;
    }
    running = reconcileSpool(opts.spool, opts.index, opts.studyCompleteQueue, opts.quietPeriodMs, {
      rearmReceiving: trigger === 'redis-back',
    })
      .then(
        () => undefined,
        (err: unknown) => pipelineEvents.reconcileFailed(trigger, err),
      )
      .finally(() => {
        running = undefined;
        const next = again;
        again = undefined;
        if (next) run(next);
      });
  };
  let lost = false;
  const onLost = () => {
    lost = true;
  };
  const onReady = () => {
    if (!lost) return;
    lost = false;
    pipelineEvents.redisBack();
    run('redis-back');
  };
  opts.redis.on('close', onLost);
  opts.redis.on('end', onLost);
  opts.redis.on('ready', onReady);
  if (opts.passAtStart) run('redis-back');
  const timer = setInterval(() => run('periodic'), opts.intervalMs);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    opts.redis.off('close', onLost);
    opts.redis.off('end', onLost);
    opts.redis.off('ready', onReady);
    await running;
  };
}
