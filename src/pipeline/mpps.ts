// Study completion from evidence: the Modality Performed Procedure Steps a modality reports (N-CREATE,
// N-SET) are kept in Redis. When a step is COMPLETED, the instances its Performed Series Sequence lists are
// awaited; the study completes as soon as the last of them is indexed and no step of the study is still
// IN PROGRESS, without waiting for the quiet period. The quiet period stays the fallback: a step whose
// instances never all arrive leaves the study to the timer, which marks it incomplete (study-index.ts
// noteCompletion). The DIMSE front door parses and answers; this module keeps state and decides.
import type { Redis } from 'ioredis';
import { pipelineEvents } from './events.ts';
import { keys } from './keys.ts';

export type MppsState = 'IN PROGRESS' | 'COMPLETED' | 'DISCONTINUED';
export const MPPS_STATES: readonly MppsState[] = ['IN PROGRESS', 'COMPLETED', 'DISCONTINUED'];

/** A step and its evidence are forgotten this long after their last update (a study's life in the gateway). */
export const MPPS_TTL_S = 7 * 24 * 3600;

/** One item of the Performed Series Sequence: the series and the SOP instances the modality made in it. */
export interface PerformedSeries {
  seriesUid: string;
  instances: string[];
}

export interface MppsCreate {
  /** Study Instance UIDs of the Scheduled Step Attributes Sequence (usually one). */
  studies: string[];
  state: MppsState;
  series: PerformedSeries[];
  callingAe: string;
}

export interface MppsUpdate {
  /** Absent when the N-SET did not carry Performed Procedure Step Status. */
  state?: MppsState;
  /** Absent when the N-SET did not carry Performed Series Sequence (the step keeps what it had). */
  series?: PerformedSeries[];
  /** Discontinuation reason (Code Meaning), when given. */
  reason?: string;
}

export type CreateOutcome = { ok: true } | { ok: false; why: 'duplicate' };
export type SetOutcome =
  | { ok: true; state: MppsState; completedStudies: string[] }
  | { ok: false; why: 'no-such-instance' | 'final' };

export interface MppsRecord {
  mppsUid: string;
  state: MppsState;
  studies: string[];
  series: PerformedSeries[];
  callingAe: string;
  reason?: string;
  createdAt: number;
  updatedAt: number;
}

/** Step fields live in the step's hash; each study of a single-study step gets `open` + 1. */
const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'studies', ARGV[2], 'series', ARGV[3], 'callingAe', ARGV[4],
  'createdAt', ARGV[5], 'updatedAt', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if KEYS[2] then
  redis.call('HINCRBY', KEYS[2], 'open', 1)
  redis.call('HINCRBY', KEYS[2], 'steps', 1)
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
return 1`;

/**
 * KEYS: step, and for a single-study step: study MPPS hash, awaiting set, instances hash, study hash.
 * ARGV: new state ('' none), series JSON ('' none), reason, ttl, now.
 * Returns {-1} unknown step, {-2} step already final, {0} still in progress (or multi-study), or
 * {1, open steps, awaiting instances, indexed instances, study state} when this N-SET ended the step.
 */
const SET = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {-1} end
if state ~= 'IN PROGRESS' then return {-2} end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'series', ARGV[2]) end
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[1] == '' or ARGV[1] == 'IN PROGRESS' then return {0} end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[3]) end
if not KEYS[2] then return {0} end
local open = redis.call('HINCRBY', KEYS[2], 'open', -1)
if ARGV[1] == 'COMPLETED' then
  redis.call('HINCRBY', KEYS[2], 'completed', 1)
  local announced = cjson.decode(redis.call('HGET', KEYS[1], 'series'))
  for _, s in ipairs(announced) do
    for _, sop in ipairs(s.instances) do
      if redis.call('HEXISTS', KEYS[4], sop) == 0 then redis.call('SADD', KEYS[3], sop) end
    end
  end
  redis.call('EXPIRE', KEYS[3], ARGV[4])
else
  redis.call('HINCRBY', KEYS[2], 'discontinued', 1)
  redis.call('HSET', KEYS[2], 'reason', ARGV[3])
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {1, open, redis.call('SCARD', KEYS[3]), redis.call('HLEN', KEYS[4]),
  redis.call('HGET', KEYS[5], 'state') or ''}`;

export class MppsStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    /** Completes a study at once (CompletionArmer.completeNow in the gateway). */
    private readonly completion: { completeNow(studyUid: string): Promise<void> },
  ) {}

  /** N-CREATE: a new step (a step UID seen before is a duplicate, whatever its state). */
  async create(mppsUid: string, step: MppsCreate): Promise<CreateOutcome> {
    const studyKeys = step.studies.length === 1 ? [keys.studyMpps(this.prefix, step.studies[0]!)] : [];
    const created = await this.redis.eval(
      CREATE,
      1 + studyKeys.length,
      keys.mpps(this.prefix, mppsUid),
      ...studyKeys,
      step.state,
      JSON.stringify(step.studies),
      JSON.stringify(step.series),
      step.callingAe,
      String(Date.now()),
      String(MPPS_TTL_S),
    );
    if (Number(created) !== 1) return { ok: false, why: 'duplicate' };
    pipelineEvents.mppsCreated(mppsUid, step.studies, countInstances(step.series));
    return { ok: true };
  }

  /**
   * N-SET: updates an IN PROGRESS step. COMPLETED awaits the announced instances not indexed yet;
   * DISCONTINUED closes what arrived. Either way, a study whose steps have all ended and whose announced
   * instances are all indexed completes now (its delayed study-complete job runs at once).
   * A step that names several studies is kept, but completes none of them (the quiet period does).
   */
  async set(mppsUid: string, update: MppsUpdate): Promise<SetOutcome> {
    const stepKey = keys.mpps(this.prefix, mppsUid);
    const studies = await this.studiesOf(stepKey);
    if (studies === undefined) return { ok: false, why: 'no-such-instance' };
    const study = studies.length === 1 ? studies[0]! : undefined;
    const studyKeys =
      study === undefined
        ? []
        : [
            keys.studyMpps(this.prefix, study),
            keys.studyAwaiting(this.prefix, study),
            keys.studyInstances(this.prefix, study),
            keys.study(this.prefix, study),
          ];
    const reply = (await this.redis.eval(
      SET,
      1 + studyKeys.length,
      stepKey,
      ...studyKeys,
      update.state ?? '',
      update.series !== undefined ? JSON.stringify(update.series) : '',
      update.reason ?? '',
      String(MPPS_TTL_S),
      String(Date.now()),
    )) as (number | string)[];
    const code = Number(reply[0]);
    if (code === -1) return { ok: false, why: 'no-such-instance' };
    if (code === -2) return { ok: false, why: 'final' };
    const state = update.state ?? 'IN PROGRESS';
    if (code === 0 || study === undefined) {
      pipelineEvents.mppsUpdated(mppsUid, state, studies);
      return { ok: true, state, completedStudies: [] };
    }
    const [, open, awaiting, indexed, studyState] = reply;
    pipelineEvents.mppsEnded(mppsUid, state, study, Number(awaiting), update.reason);
    // Nothing arrived yet, or the study was already routed since its last instance: nothing to complete.
    if (Number(open) > 0 || Number(awaiting) > 0 || Number(indexed) === 0 || studyState !== 'receiving')
      return { ok: true, state, completedStudies: [] };
    await this.completion.completeNow(study);
    pipelineEvents.studyCompleteByEvidence(study, 'mpps');
    return { ok: true, state, completedStudies: [study] };
  }

  async get(mppsUid: string): Promise<MppsRecord | undefined> {
    const f = await this.redis.hgetall(keys.mpps(this.prefix, mppsUid));
    if (!f.state) return undefined;
    return {
      mppsUid,
      state: f.state as MppsState,
      studies: JSON.parse(f.studies ?? '[]') as string[],
      series: JSON.parse(f.series ?? '[]') as PerformedSeries[],
      callingAe: f.callingAe ?? '',
      ...(f.reason ? { reason: f.reason } : {}),
      createdAt: Number(f.createdAt),
      updatedAt: Number(f.updatedAt),
    };
  }

  private async studiesOf(stepKey: string): Promise<string[] | undefined> {
    const raw = await this.redis.hget(stepKey, 'studies');
    return raw === null ? undefined : (JSON.parse(raw) as string[]);
  }
}

function countInstances(series: PerformedSeries[]): number {
  return series.reduce((n, s) => n + s.instances.length, 0);
}
