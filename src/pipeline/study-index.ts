import type { Redis } from 'ioredis';
import type { InstanceRecord } from './instance-record.ts';
import { keys } from './keys.ts';

export type { InstanceRecord } from './instance-record.ts';

/** A report written for a study: enough to reference it as the predecessor of the next run's report. */
export interface ReportRecord {
  sopInstanceUid: string;
  seriesUid: string;
  sopClassUid: string;
  run: number;
  /** The report this one superseded, so a retry of the same run references the same predecessor. */
  predecessor?: Omit<ReportRecord, 'predecessor'>;
}

export type StudyState = 'receiving' | 'queued' | 'inferring' | 'delivering' | 'done' | 'failed';

export interface StudySummary {
  studyUid: string;
  state: StudyState;
  callingAe: string;
  firstReceivedAt: number;
  lastReceivedAt: number;
  instanceCount: number;
  /** Completed processing runs; a re-run supersedes the previous one. */
  run: number;
  detail?: string;
}

/**
 * The body part routing used for one series and where it came from, kept for the console and the API.
 * Written by the router on each run (the latest run's view replaces the previous one).
 */
export interface SeriesAnatomyRecord {
  seriesUid: string;
  /** A DICOM defined term such as CHEST; absent when nothing said. */
  bodyPart?: string;
  /** 'bodyPartExamined' | 'anatomicRegion' | 'keyword:<word>' | 'rule-assumed' | 'none'. */
  source: string;
  /** For a keyword: the attribute it was found in. */
  attribute?: string;
  /** For 'rule-assumed': the rule. */
  rule?: string;
  /** Body Part Examined as received. */
  bodyPartExamined?: string;
}

/**
 * The study index in Redis. The spool is the source of truth for instances; this index is rebuilt from
 * it on start-up (see reconcile.ts), so losing Redis loses no study.
 */
export class StudyIndex {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private studyKey(uid: string): string {
    return keys.study(this.prefix, uid);
  }
  private instancesKey(uid: string): string {
    return keys.studyInstances(this.prefix, uid);
  }
  private get studiesKey(): string {
    return keys.studies(this.prefix);
  }

  async recordInstance(rec: InstanceRecord): Promise<void> {
    const key = this.studyKey(rec.studyUid);
    await this.redis
      .multi()
      .hset(this.instancesKey(rec.studyUid), rec.sopInstanceUid, JSON.stringify(rec))
      .hsetnx(key, 'firstReceivedAt', String(rec.receivedAt))
      .hsetnx(key, 'run', '0')
      .hset(key, {
        studyUid: rec.studyUid,
        lastReceivedAt: String(rec.receivedAt),
        callingAe: rec.callingAe,
        state: 'receiving',
      })
      .zadd(this.studiesKey, rec.receivedAt, rec.studyUid)
      .exec();
  }

  async hasInstance(studyUid: string, sopInstanceUid: string): Promise<boolean> {
    return (await this.redis.hexists(this.instancesKey(studyUid), sopInstanceUid)) === 1;
  }

  async instances(studyUid: string): Promise<InstanceRecord[]> {
    const values = await this.redis.hvals(this.instancesKey(studyUid));
    return values.map((v) => JSON.parse(v) as InstanceRecord);
  }

  async get(studyUid: string): Promise<StudySummary | undefined> {
    const [fields, count] = await Promise.all([
      this.redis.hgetall(this.studyKey(studyUid)),
      this.redis.hlen(this.instancesKey(studyUid)),
    ]);
    if (!fields.studyUid) return undefined;
    return {
      studyUid,
      state: (fields.state as StudyState) ?? 'receiving',
      callingAe: fields.callingAe ?? '',
      firstReceivedAt: Number(fields.firstReceivedAt),
      lastReceivedAt: Number(fields.lastReceivedAt),
      instanceCount: count,
      run: Number(fields.run ?? 0),
      detail: fields.detail || undefined,
    };
  }

  /** Most recently active studies first. */
  async list(limit = 100): Promise<StudySummary[]> {
    const uids = await this.redis.zrevrange(this.studiesKey, 0, limit - 1);
    const studies = await Promise.all(uids.map((uid) => this.get(uid)));
    return studies.filter((s): s is StudySummary => s !== undefined);
  }

  /**
   * The state of each of the `limit` most recently active studies, one pipelined HMGET each: what the
   * dashboard's summary needs, without the whole summaries (same rules as get()).
   */
  async states(limit: number): Promise<StudyState[]> {
    const uids = await this.redis.zrevrange(this.studiesKey, 0, limit - 1);
    if (uids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const uid of uids) pipeline.hmget(this.studyKey(uid), 'studyUid', 'state');
    const replies = (await pipeline.exec()) ?? [];
    const states: StudyState[] = [];
    for (const [err, value] of replies) {
      if (err) throw err;
      const [studyUid, state] = value as (string | null)[];
      if (studyUid) states.push((state as StudyState | null) ?? 'receiving');
    }
    return states;
  }

  async setState(studyUid: string, state: StudyState, detail = ''): Promise<void> {
    await this.redis.hset(this.studyKey(studyUid), { state, detail });
  }

  /** Marks the run as queued with this many inference jobs outstanding. */
  async startRun(studyUid: string, inferenceJobs: number): Promise<void> {
    await this.redis.hset(this.studyKey(studyUid), {
      state: 'queued',
      detail: '',
      pendingInference: inferenceJobs,
      pendingDelivery: 0,
    });
  }

  /** One inference job of the run finished and queued this many deliveries. */
  async inferenceDone(studyUid: string, deliveries: number, jobKey?: string): Promise<void> {
    const key = this.studyKey(studyUid);
    if (jobKey && !(await this.firstSettlement(studyUid, jobKey))) return this.resettle(studyUid);
    const [[, pendingInference], [, pendingDelivery]] = (await this.redis
      .multi()
      .hincrby(key, 'pendingInference', -1)
      .hincrby(key, 'pendingDelivery', deliveries)
      .exec()) as [[null, number], [null, number]];
    await this.settle(studyUid, pendingInference, pendingDelivery);
  }

  async deliveryDone(studyUid: string, jobKey?: string): Promise<void> {
    const key = this.studyKey(studyUid);
    if (jobKey && !(await this.firstSettlement(studyUid, jobKey))) return this.resettle(studyUid);
    const [[, pendingDelivery], [, pendingInference]] = (await this.redis
      .multi()
      .hincrby(key, 'pendingDelivery', -1)
      .hget(key, 'pendingInference')
      .exec()) as [[null, number], [null, string | null]];
    await this.settle(studyUid, Number(pendingInference), pendingDelivery);
  }

  /** A retried job settles once: the second report of the same job id leaves the counters alone. */
  private async firstSettlement(studyUid: string, jobKey: string): Promise<boolean> {
    return (await this.redis.sadd(keys.studySettled(this.prefix, studyUid), jobKey)) === 1;
  }

  /** Re-derives the state from the counters (a retried job may have moved it). */
  private async resettle(studyUid: string): Promise<void> {
    const [inference, delivery] = await this.redis.hmget(
      this.studyKey(studyUid),
      'pendingInference',
      'pendingDelivery',
    );
    await this.settle(studyUid, Number(inference ?? 0), Number(delivery ?? 0));
  }

  private async settle(studyUid: string, pendingInference: number, pendingDelivery: number): Promise<void> {
    const state = await this.redis.hget(this.studyKey(studyUid), 'state');
    if (state === 'failed' || state === 'receiving') return;
    if (pendingInference <= 0 && pendingDelivery <= 0) {
      // Spool retention counts from doneAt (src/pipeline/retention.ts).
      await this.redis.hset(this.studyKey(studyUid), {
        state: 'done',
        detail: '',
        doneAt: String(Date.now()),
      });
    } else if (pendingInference <= 0) await this.setState(studyUid, 'delivering');
  }

  /** When the study last reached 'done' (every delivery succeeded), if it has. */
  async doneAt(studyUid: string): Promise<number | undefined> {
    const v = await this.redis.hget(this.studyKey(studyUid), 'doneAt');
    return v ? Number(v) : undefined;
  }

  /** Drops instance records whose spool files were removed, so the index matches the spool. */
  async forgetInstances(studyUid: string, sopInstanceUids: string[]): Promise<void> {
    if (sopInstanceUids.length > 0) await this.redis.hdel(this.instancesKey(studyUid), ...sopInstanceUids);
  }

  /** The latest report a model wrote for this study (a re-run's report supersedes it). */
  async lastReport(studyUid: string, modelId: string): Promise<ReportRecord | undefined> {
    const raw = await this.redis.hget(this.studyKey(studyUid), `lastSr:${modelId}`);
    return raw ? (JSON.parse(raw) as ReportRecord) : undefined;
  }

  async setLastReport(studyUid: string, modelId: string, report: ReportRecord): Promise<void> {
    await this.redis.hset(this.studyKey(studyUid), `lastSr:${modelId}`, JSON.stringify(report));
  }

  /** Replaces the study's per-series anatomy records with these. */
  async setSeriesAnatomy(studyUid: string, records: SeriesAnatomyRecord[]): Promise<void> {
    const key = keys.studySeries(this.prefix, studyUid);
    const tx = this.redis.multi().del(key);
    if (records.length > 0)
      tx.hset(key, Object.fromEntries(records.map((r) => [r.seriesUid, JSON.stringify(r)])));
    await tx.exec();
  }

  async seriesAnatomy(studyUid: string): Promise<SeriesAnatomyRecord[]> {
    const values = await this.redis.hvals(keys.studySeries(this.prefix, studyUid));
    return values.map((v) => JSON.parse(v) as SeriesAnatomyRecord);
  }

  /** Starts a new processing run and returns its number (1 for the first). */
  async nextRun(studyUid: string): Promise<number> {
    return this.redis.hincrby(this.studyKey(studyUid), 'run', 1);
  }
}
