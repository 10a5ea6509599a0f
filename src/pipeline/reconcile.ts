import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { readInstanceHeader } from '../dicom/part10.ts';
import { pipelineEvents } from './events.ts';
import type { StudyCompleteJob } from './jobs.ts';
import { rearmStudyComplete } from './completion.ts';
import { objectKey, parseInstanceKey } from '../storage/object-keys.ts';
import type { ObjectStore, StoredObject } from '../storage/object-store.ts';
import type { InstanceRecord, StudyIndex } from './study-index.ts';

/**
 * Pass over the object store's instances (at start-up, when Redis comes back, and periodically). Any
 * instance stored that the index does not know (Redis lost its data, or the process died between the commit
 * and the index write, or the index write failed during an outage) is indexed again, and its study's
 * completion re-armed, so an acknowledged instance is never forgotten. With `rearmReceiving`, studies still
 * receiving are re-armed too, since their delayed completion job may have been lost with Redis. The store
 * is listed (keys in order, so one study's instances come together), never a directory read.
 */
export async function reconcileSpool(
  store: ObjectStore,
  index: StudyIndex,
  studyCompleteQueue: Queue<StudyCompleteJob>,
  quietPeriodMs: number,
  { rearmReceiving = true }: { rearmReceiving?: boolean } = {},
): Promise<{ studies: number; reindexed: number }> {
  let reindexed = 0;
  let rearmed = 0;
  let studies = 0;
  let current: { studyUid: string; added: number } | undefined;
  const finishStudy = async () => {
    if (current === undefined) return;
    const { studyUid, added } = current;
    studies++;
    reindexed += added;
    const state = (await index.get(studyUid))?.state;
    if (added > 0 || (rearmReceiving && state === 'receiving')) {
      await rearmStudyComplete(studyCompleteQueue, studyUid, quietPeriodMs);
      rearmed++;
    }
  };
  for await (const object of store.list(objectKey.studiesPrefix)) {
    const key = parseInstanceKey(object.key);
    if (key === undefined) continue;
    if (current?.studyUid !== key.studyUid) {
      await finishStudy();
      current = { studyUid: key.studyUid, added: 0 };
    }
    if (await index.hasInstance(key.studyUid, key.sopInstanceUid)) continue;
    try {
      await index.recordInstance(await recordOf(store, object, key));
      current.added++;
    } catch (err) {
      pipelineEvents.reconcileUnreadable(key.studyUid, object.key, err);
    }
  }
  await finishStudy();
  pipelineEvents.reconcileDone(studies, reindexed, rearmed);
  return { studies, reindexed };
}

/** The index record of a stored instance nobody indexed, from its header. */
async function recordOf(
  store: ObjectStore,
  object: StoredObject,
  key: NonNullable<ReturnType<typeof parseInstanceKey>>,
): Promise<InstanceRecord> {
  const copy = await store.localCopy(object.key);
  try {
    const h = await readInstanceHeader(copy.path);
    return {
      ...h,
      ...key,
      sopClassUid: h.sopClassUid ?? '',
      transferSyntaxUid: h.transferSyntaxUid ?? '',
      size: object.size,
      callingAe: '',
      callingAddress: '',
      receivedAt: Date.now(),
    };
  } finally {
    await copy.release();
  }
}

export interface SpoolReconcilerOptions {
  store: ObjectStore;
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
 * Keeps the index in step with the object store while the gateway runs: a pass each time Redis comes back after a
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
    running = reconcileSpool(opts.store, opts.index, opts.studyCompleteQueue, opts.quietPeriodMs, {
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
