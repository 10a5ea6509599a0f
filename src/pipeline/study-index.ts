import type { Redis } from 'ioredis';
import { createHash } from 'node:crypto';
import { countEvidence, NO_COUNT_PLAN, type CountPlan } from './counts.ts';
import type { InstanceRecord } from './instance-record.ts';
import { keys } from './keys.ts';
import { trendField, trendMinute, TRENDS_TTL_S } from './trends.ts';

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

/** 'no-model': routing found no model for any series; the study's routing records say why. */
export type StudyState = 'receiving' | 'queued' | 'inferring' | 'delivering' | 'done' | 'no-model' | 'failed';

/** Every state, in pipeline order (the API validates filters and the console lists them from this). */
export const STUDY_STATES: StudyState[] = [
  'receiving',
  'queued',
  'inferring',
  'delivering',
  'done',
  'no-model',
  'failed',
];

export interface StudySummary {
  studyUid: string;
  state: StudyState;
  callingAe: string;
  firstReceivedAt: number;
  lastReceivedAt: number;
  /** When the study last reached 'done' (every delivery of its run landed), if it has. */
  doneAt?: number;
  instanceCount: number;
  /** Completed processing runs; a re-run supersedes the previous one. */
  run: number;
  detail?: string;
  /** Each model's current report (the latest run's, which supersedes the one it names). */
  reports?: CurrentReport[];
  /** How the latest run's completion was decided (absent before the first run). */
  completion?: StudyCompletion;
  /** Distinct modalities of the study's series, sorted. */
  modalities: string[];
  /** Study Description of the first instance that had one. */
  description?: string;
  seriesCount: number;
  /** Identifying data as received (PHI): the API masks it for users without the PHI permission. */
  identity?: StudyIdentity;
  /** Per model, the findings of its current report, read from the SR's content. */
  findings: ReportFindings[];
}

export interface StudyIdentity {
  accessionNumber?: string;
  patientId?: string;
  patientName?: string;
}

/** One row of a report's findings table, as the SR states it (TID 1500 measurement group). */
export interface FindingRow {
  /** The finding's concept (code value, scheme, meaning). */
  code?: { value: string; scheme: string; meaning: string };
  meaning: string;
  /** 0-1, from Certainty of Finding (percent in the SR). */
  probability?: number;
  /** The qualitative evaluation: 'Present' or 'Absent' (absent for volumes). */
  presence?: string;
  volumeMl?: number;
  /** Exclusive classes: each class's probability, by its meaning. */
  classes?: { meaning: string; probability: number }[];
}

/** A model's current report as a findings table, with the top finding for the study list. */
export interface ReportFindings {
  model: string;
  version: string;
  run: number;
  srUid: string;
  /** The run's DICOM SEG (segmentation models), kept in the outbox with the SR; absent when none was written. */
  segUid?: string;
  rows: FindingRow[];
  /** The most probable finding (or the first row). */
  top?: FindingRow;
  /** Some row is a positive finding (isPositiveRow). */
  positive: boolean;
}

/** SNOMED CT 17621005 "Normal": an exclusive classifier's Present normal class is not a positive finding. */
const NORMAL_CODE = '17621005';

/**
 * Whether a report row is a positive finding: Present (a classification's probability reached its
 * threshold), not "Normal"; and for exclusive classes (always one Present) more probable than all the
 * others together, so a near-uniform output (three classes near 33 %) is not called positive.
 */
export function isPositiveRow(row: FindingRow): boolean {
  if (row.presence !== 'Present' || row.code?.value === NORMAL_CODE) return false;
  return row.classes === undefined || (row.probability ?? 0) > 0.5;
}

/** The fields of a study hash, as the console's list and page show them. */
export function studyFromFields(
  studyUid: string,
  fields: Record<string, string>,
  instanceCount: number,
): StudySummary | undefined {
  if (!fields.studyUid) return undefined;
  const modalities = new Set<string>();
  let seriesCount = 0;
  const findings: ReportFindings[] = [];
  for (const [field, value] of Object.entries(fields)) {
    if (field.startsWith('ser:')) {
      seriesCount++;
      if (value) modalities.add(value);
    } else if (field.startsWith('findings:')) {
      try {
        findings.push(JSON.parse(value) as ReportFindings);
      } catch {
        // a malformed field is skipped
      }
    }
  }
  const identity: StudyIdentity = {};
  if (fields['phi:accession']) identity.accessionNumber = fields['phi:accession'];
  if (fields['phi:patientId']) identity.patientId = fields['phi:patientId'];
  if (fields['phi:patientName']) identity.patientName = fields['phi:patientName'];
  let completion: StudyCompletion | undefined;
  try {
    completion = fields.completion ? (JSON.parse(fields.completion) as StudyCompletion) : undefined;
  } catch {
    completion = undefined;
  }
  return {
    studyUid,
    state: (fields.state as StudyState) ?? 'receiving',
    callingAe: fields.callingAe ?? '',
    firstReceivedAt: Number(fields.firstReceivedAt),
    lastReceivedAt: Number(fields.lastReceivedAt),
    ...(fields.doneAt ? { doneAt: Number(fields.doneAt) } : {}),
    instanceCount,
    run: Number(fields.run ?? 0),
    detail: fields.detail || undefined,
    ...(completion ? { completion } : {}),
    reports: currentReports(fields),
    modalities: [...modalities].sort(),
    ...(fields.description ? { description: fields.description } : {}),
    seriesCount,
    ...(Object.keys(identity).length ? { identity } : {}),
    findings: findings.sort((a, b) => a.model.localeCompare(b.model)),
  };
}

export interface CurrentReport {
  model: string;
  sopInstanceUid: string;
  run: number;
  /** The report this one superseded (PredecessorDocumentsSequence), if any. */
  supersedes?: string;
}

/** The `lastSr:<model>` fields of a study hash, as the current report of each model. */
function currentReports(fields: Record<string, string>): CurrentReport[] {
  const reports: CurrentReport[] = [];
  for (const [field, raw] of Object.entries(fields)) {
    if (!field.startsWith('lastSr:')) continue;
    try {
      const r = JSON.parse(raw) as ReportRecord;
      reports.push({
        model: field.slice('lastSr:'.length),
        sopInstanceUid: r.sopInstanceUid,
        run: r.run,
        ...(r.predecessor ? { supersedes: r.predecessor.sopInstanceUid } : {}),
      });
    } catch {
      // a malformed field is skipped
    }
  }
  return reports;
}

/**
 * How a study was found complete: 'mpps' when its performed procedure steps all ended and every instance
 * they announced had arrived; 'counts' when its series were all complete by the counts their images carry and
 * a rule's completeWhen held as its last instance came (pipeline/counts.ts); 'quiet-period' when the idle
 * timer decided. `incomplete` when a step was
 * still in progress or announced instances were missing (`missing` of them) as the timer fired.
 */
export interface StudyCompletion {
  run: number;
  by: 'mpps' | 'counts' | 'quiet-period';
  incomplete: boolean;
  missing: number;
  openSteps: number;
  /** A step was DISCONTINUED: the study closed with what arrived, for this reason. */
  discontinued?: string;
}

/** What one model made of one run of a study, for the console and the API. */
export interface ModelOutcome {
  run: number;
  /** Images the model used. */
  images: number;
  /** How many it skipped, and why (the first few). */
  skipped: number;
  reasons: string[];
}

/** Whether one model took one series, and if not, each criterion that failed with the value seen. */
export interface ModelDecision {
  accepted: boolean;
  /** The rules under which the model took the series. */
  rules: string[];
  /** e.g. `bodyPart: "" not in [CHEST]` (rule name first when rules are configured). */
  reasons: string[];
}

/**
 * How routing saw one series on the latest run: the body part it used and where that came from, and for
 * every model whether it took the series and why not. Kept for the console, the API and the dry run.
 */
export interface SeriesRoutingRecord {
  seriesUid: string;
  /** The run this decision belongs to. */
  run?: number;
  modality?: string;
  /** Per model, keyed `<id>@<version>`. */
  models?: Record<string, ModelDecision>;
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
  private get changedKey(): string {
    return keys.studiesChanged(this.prefix);
  }

  /**
   * A MULTI that also notes the study as changed (for the console's incremental list), scored on Redis's
   * clock, so writers on other hosts with other clocks agree with the reader.
   */
  private changing(studyUid: string) {
    return this.redis.multi().eval(NOTE_CHANGED, 1, this.changedKey, studyUid);
  }

  /**
   * Drops notes of changes older than CHANGED_KEEP_MS (Redis time), so the changed-studies set stays
   * bounded even when no console reads it (retention calls this every pass). Returns how many went.
   */
  async trimChanged(): Promise<number> {
    const [seconds, micros] = await this.redis.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    return this.redis.zremrangebyscore(this.changedKey, '-inf', now - CHANGED_KEEP_MS);
  }

  /**
   * Studies whose summary changed at or after `since` (Redis time, ms), and Redis's time now: the next
   * call's `since` (less a margin). Trims entries older than CHANGED_KEEP_MS.
   */
  async changedSince(since: number): Promise<{ uids: string[]; scores: number[]; now: number }> {
    const replies = await this.redis
      .multi()
      .time()
      .zrangebyscore(this.changedKey, since, '+inf', 'WITHSCORES')
      .exec();
    if (replies === null) throw new Error('reading changed studies: transaction aborted');
    for (const [err] of replies) if (err) throw err;
    const [seconds, micros] = replies[0]![1] as [string, string];
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    await this.redis.zremrangebyscore(this.changedKey, '-inf', now - CHANGED_KEEP_MS);
    const flat = replies[1]![1] as string[];
    const uids: string[] = [];
    const scores: number[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      uids.push(flat[i]!);
      scores.push(Number(flat[i + 1]));
    }
    return { uids, scores, now };
  }

  /**
   * Indexes the instance, in one script (one round trip). In the same script the instance leaves the study's
   * set of instances a COMPLETED MPPS announced (pipeline/mpps.ts), and, when it is new, is counted against
   * what its series says of its own size (pipeline/counts.ts). `evidenceComplete` is true when the study is
   * whole now, and `evidence` says by what: 'mpps' when this was the last instance awaited and no step of the
   * study is still in progress; 'counts' when every series is complete by its counts and a rule that applies
   * to the sender (`plan`, from CountRules) is satisfied.
   */
  async recordInstance(
    rec: InstanceRecord,
    plan: CountPlan = NO_COUNT_PLAN,
  ): Promise<{ evidenceComplete: boolean; evidence?: 'mpps' | 'counts'; newStudy: boolean }> {
    const ev = countEvidence(rec);
    // Identifying data stays on the study (masked by the API), never in the instance record.
    const { identity, ...stored } = rec;
    const reply = (await this.script(
      RECORD_INSTANCE,
      [
        this.instancesKey(rec.studyUid),
        this.studyKey(rec.studyUid),
        this.studiesKey,
        keys.studyAwaiting(this.prefix, rec.studyUid),
        keys.studyMpps(this.prefix, rec.studyUid),
        keys.studyCounts(this.prefix, rec.studyUid),
        this.changedKey,
      ],
      [
        rec.sopInstanceUid,
        JSON.stringify(stored),
        String(rec.receivedAt),
        rec.studyUid,
        rec.callingAe,
        rec.seriesUid,
        ev.seriesInstances?.toString() ?? '',
        ev.acquisition?.images.toString() ?? '',
        ev.acquisition?.number ?? '',
        ev.wholeSeries ? '1' : '',
        plan.conditions,
        plan.rules,
        rec.modality ?? '',
        rec.studyDescription ?? '',
        identity?.accessionNumber ?? '',
        identity?.patientId ?? '',
        identity?.patientName ?? '',
      ],
    )) as [number, number, number];
    const [mpps, counts, first] = reply.map(Number);
    const newStudy = first === 1;
    if (mpps === 1) return { evidenceComplete: true, evidence: 'mpps', newStudy };
    if (counts === 1) return { evidenceComplete: true, evidence: 'counts', newStudy };
    return { evidenceComplete: false, newStudy };
  }

  /** EVALSHA, loading the script on NOSCRIPT (the first call after a start or a Redis restart). */
  private async script(script: Script, keyList: string[], args: string[]): Promise<unknown> {
    try {
      return await this.redis.evalsha(script.sha, keyList.length, ...keyList, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return this.redis.eval(script.body, keyList.length, ...keyList, ...args);
    }
  }

  /**
   * Called by routing as the study completes: how it completed, from the MPPS evidence, kept on the study
   * for the console and the API. With no MPPS it is the quiet period; with MPPS whose steps all ended and
   * whose announced instances all arrived, the evidence; otherwise the quiet period, incomplete, with the
   * count of announced instances still missing (and steps still in progress).
   */
  async noteCompletion(studyUid: string, run: number): Promise<StudyCompletion> {
    const [mpps, missing, byCounts] = await Promise.all([
      this.redis.hgetall(keys.studyMpps(this.prefix, studyUid)),
      this.redis.scard(keys.studyAwaiting(this.prefix, studyUid)),
      this.redis.hget(this.studyKey(studyUid), 'completeByCounts'),
    ]);
    const steps = Number(mpps.steps ?? 0);
    const openSteps = Math.max(0, Number(mpps.open ?? 0));
    const timer = byCounts === '1' ? 'counts' : 'quiet-period';
    let completion: StudyCompletion;
    if (steps === 0) completion = { run, by: timer, incomplete: false, missing: 0, openSteps: 0 };
    else
      completion = {
        run,
        by: openSteps === 0 && missing === 0 ? 'mpps' : timer,
        incomplete: openSteps > 0 || missing > 0,
        missing,
        openSteps,
        ...(Number(mpps.discontinued ?? 0) > 0 ? { discontinued: mpps.reason || 'no reason given' } : {}),
      };
    await this.changing(studyUid)
      .hset(this.studyKey(studyUid), 'completion', JSON.stringify(completion))
      .exec();
    return completion;
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
    return studyFromFields(studyUid, fields, count);
  }

  /**
   * Every study (newest activity first), each as its summary: one pipelined HGETALL and HLEN per study.
   * What the console's list filters, sorts and pages; 10,000 studies answer well inside 100 ms.
   */
  async all(): Promise<StudySummary[]> {
    const uids = await this.redis.zrevrange(this.studiesKey, 0, -1);
    return this.many(uids);
  }

  /** These studies' summaries, in this order (unknown ones left out), pipelined. */
  async many(uids: string[]): Promise<StudySummary[]> {
    if (uids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const uid of uids) pipeline.hgetall(this.studyKey(uid)).hlen(this.instancesKey(uid));
    const replies = (await pipeline.exec()) ?? [];
    const out: StudySummary[] = [];
    uids.forEach((uid, i) => {
      const [err, fields] = replies[2 * i] ?? [null, {}];
      const [err2, count] = replies[2 * i + 1] ?? [null, 0];
      if (err) throw err;
      if (err2) throw err2;
      const s = studyFromFields(uid, fields as Record<string, string>, Number(count));
      if (s) out.push(s);
    });
    return out;
  }

  /** The number of studies in the index. */
  async count(): Promise<number> {
    return this.redis.zcard(this.studiesKey);
  }

  /**
   * The findings table of a model's current report (read from the SR by the reports stage). The report
   * is counted in the same transaction in the current minute's trends (reports, positive reports per
   * model: the console's positive-finding rate).
   */
  async setReportFindings(studyUid: string, findings: ReportFindings, at = Date.now()): Promise<void> {
    const trend = keys.trends(this.prefix, trendMinute(at));
    const multi = this.changing(studyUid)
      .hset(this.studyKey(studyUid), `findings:${findings.model}`, JSON.stringify(findings))
      .hincrby(trend, trendField.reports(findings.model), 1);
    if (findings.positive) multi.hincrby(trend, trendField.positive(findings.model), 1);
    const replies = (await multi.expire(trend, TRENDS_TTL_S).exec()) ?? [];
    for (const [err] of replies) if (err) throw err;
  }

  /** The AE title that sent the study ('' when unknown). */
  async callingAe(studyUid: string): Promise<string> {
    return (await this.redis.hget(this.studyKey(studyUid), 'callingAe')) ?? '';
  }

  /** Most recently active studies first. */
  async list(limit = 100): Promise<StudySummary[]> {
    return this.many(await this.redis.zrevrange(this.studiesKey, 0, limit - 1));
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
    await this.changing(studyUid).hset(this.studyKey(studyUid), { state, detail }).exec();
  }

  /**
   * Marks `run` as the study's current run, queued with this many inference jobs outstanding. Counters are
   * kept per run, so a job of an earlier run that finishes late (a reprocess, or a late instance that
   * re-opened the study) can neither count against this run nor mark the study done.
   */
  async startRun(studyUid: string, run: number, inferenceJobs: number): Promise<void> {
    const key = this.studyKey(studyUid);
    const stale = (await this.redis.hkeys(key)).filter((f) => /^pending(Inference|Delivery):/.test(f));
    const multi = this.changing(studyUid);
    if (stale.length > 0) multi.hdel(key, ...stale);
    multi.hset(key, {
      state: 'queued',
      detail: '',
      currentRun: run,
      [pendingField('Inference', run)]: inferenceJobs,
      [pendingField('Delivery', run)]: 0,
    });
    await multi.exec();
  }

  /** One inference job of `run` finished and queued this many deliveries. */
  async inferenceDone(studyUid: string, run: number, deliveries: number, jobKey?: string): Promise<void> {
    const first = jobKey === undefined || (await this.firstSettlement(studyUid, jobKey));
    // A retried job's second report leaves the counters alone and only re-derives the state.
    await this.settle(studyUid, run, first ? -1 : 0, first ? deliveries : 0);
  }

  /** One delivery of `run` landed. */
  async deliveryDone(studyUid: string, run: number, jobKey?: string): Promise<void> {
    const first = jobKey === undefined || (await this.firstSettlement(studyUid, jobKey));
    await this.settle(studyUid, run, 0, first ? -1 : 0);
  }

  /** The study's current run (the one whose counters decide its state), 0 before the first. */
  async currentRun(studyUid: string): Promise<number> {
    return Number((await this.redis.hget(this.studyKey(studyUid), 'currentRun')) ?? 0);
  }

  /** A retried job settles once: the second report of the same job id leaves the counters alone. */
  private async firstSettlement(studyUid: string, jobKey: string): Promise<boolean> {
    return (await this.redis.sadd(keys.studySettled(this.prefix, studyUid), jobKey)) === 1;
  }

  /**
   * Moves the run's counters and sets the state they give, in one script: an inference job and the delivery
   * it queued can finish at the same moment, and a state decided from counters read before the other's
   * change would overwrite its 'done' with 'delivering' for good.
   */
  private async settle(
    studyUid: string,
    run: number,
    inferenceDelta: number,
    deliveryDelta: number,
  ): Promise<void> {
    await this.script(
      SETTLE_RUN,
      [this.studyKey(studyUid), this.changedKey],
      [String(run), String(inferenceDelta), String(deliveryDelta), String(Date.now()), studyUid],
    );
  }

  /**
   * Up to `count` studies whose last instance arrived at or before `cutoff` (epoch ms), oldest first,
   * skipping the first `offset`: retention walks every study this way, not only the newest.
   */
  async lastActiveBefore(cutoff: number, offset: number, count: number): Promise<string[]> {
    return this.redis.zrangebyscore(this.studiesKey, '-inf', cutoff, 'LIMIT', offset, count);
  }

  /**
   * Forgets a study entirely (summary, instance list, settlement set, audit summary and event index, job
   * set, MPPS evidence, counts, its place in the list), but only if no instance arrived since `lastReceivedAt` was read: a study that came back stays.
   */
  async forgetStudy(studyUid: string, lastReceivedAt: number): Promise<boolean> {
    const removed = await this.redis.eval(
      FORGET_STUDY_IF_IDLE,
      13,
      this.studyKey(studyUid),
      this.instancesKey(studyUid),
      keys.studySettled(this.prefix, studyUid),
      keys.auditStudy(this.prefix, studyUid),
      keys.studySeries(this.prefix, studyUid),
      keys.studyModels(this.prefix, studyUid),
      keys.studyJobs(this.prefix, studyUid),
      keys.auditStudyEvents(this.prefix, studyUid),
      keys.studyMpps(this.prefix, studyUid),
      keys.studyAwaiting(this.prefix, studyUid),
      keys.studyCounts(this.prefix, studyUid),
      this.studiesKey,
      this.changedKey,
      String(lastReceivedAt),
      studyUid,
    );
    return Number(removed) === 1;
  }

  /**
   * Drops the records of instances whose spool files retention removed, each only if it is still the record
   * that was read (compare-and-delete): an instance re-sent meanwhile keeps its new record.
   */
  async forgetInstances(studyUid: string, records: InstanceRecord[]): Promise<number> {
    if (records.length === 0) return 0;
    // The change is noted after the records go (the commands run in order): a reader that sees the note
    // reads the study without them (the console's cache relies on it).
    const pipeline = this.redis.pipeline();
    for (const rec of records)
      pipeline.eval(
        FORGET_IF_UNCHANGED,
        1,
        this.instancesKey(studyUid),
        rec.sopInstanceUid,
        JSON.stringify(rec),
      );
    pipeline.eval(NOTE_CHANGED, 1, this.changedKey, studyUid);
    const replies = ((await pipeline.exec()) ?? []).slice(0, -1);
    let forgotten = 0;
    for (const [err, value] of replies) {
      if (err) throw err;
      forgotten += Number(value);
    }
    return forgotten;
  }

  /** The latest report a model wrote for this study (a re-run's report supersedes it). */
  async lastReport(studyUid: string, modelId: string): Promise<ReportRecord | undefined> {
    const raw = await this.redis.hget(this.studyKey(studyUid), `lastSr:${modelId}`);
    return raw ? (JSON.parse(raw) as ReportRecord) : undefined;
  }

  async setLastReport(studyUid: string, modelId: string, report: ReportRecord): Promise<void> {
    await this.changing(studyUid)
      .hset(this.studyKey(studyUid), `lastSr:${modelId}`, JSON.stringify(report))
      .exec();
  }

  /** Replaces the study's per-series routing records with these (the latest run's view). */
  async setSeriesRouting(studyUid: string, records: SeriesRoutingRecord[]): Promise<void> {
    const key = keys.studySeries(this.prefix, studyUid);
    const tx = this.redis.multi().del(key);
    if (records.length > 0)
      tx.hset(key, Object.fromEntries(records.map((r) => [r.seriesUid, JSON.stringify(r)])));
    await tx.exec();
  }

  async seriesRouting(studyUid: string): Promise<SeriesRoutingRecord[]> {
    const values = await this.redis.hvals(keys.studySeries(this.prefix, studyUid));
    return values.map((v) => JSON.parse(v) as SeriesRoutingRecord);
  }

  /** What a model made of a run: the images it used and those it skipped, with why. */
  async setModelOutcome(studyUid: string, model: string, outcome: ModelOutcome): Promise<void> {
    await this.redis.hset(keys.studyModels(this.prefix, studyUid), model, JSON.stringify(outcome));
  }

  async modelOutcomes(studyUid: string): Promise<Record<string, ModelOutcome>> {
    const raw = await this.redis.hgetall(keys.studyModels(this.prefix, studyUid));
    return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, JSON.parse(v) as ModelOutcome]));
  }

  /** Starts a new processing run and returns its number (1 for the first). */
  async nextRun(studyUid: string): Promise<number> {
    const replies = await this.changing(studyUid).hincrby(this.studyKey(studyUid), 'run', 1).exec();
    const [err, run] = replies?.[1] ?? [new Error('starting a run: transaction aborted'), 0];
    if (err) throw err;
    return Number(run);
  }
}

interface Script {
  body: string;
  sha: string;
}

function script(body: string): Script {
  return { body, sha: createHash('sha1').update(body).digest('hex') };
}

/**
 * Indexes one instance (what the MULTI of earlier versions did), takes it off the MPPS awaiting set, and
 * counts it against its series (pipeline/counts.ts has the rules, keys.studyCounts the fields).
 * Also keeps what the console lists (the series' modality, the study description, identifying data on the
 * study only) and notes the study as changed (Redis time).
 * KEYS: instances, study, studies, awaiting, study MPPS, study counts, studies changed.
 * ARGV: SOP instance UID, record JSON, receivedAt, study UID, calling AE, series UID, Number of Series
 * Related Instances (''), Images in Acquisition (''), Acquisition Number, '1' for a whole-series enhanced
 * object, required-series conditions the instance matches, rules that apply to its sender, modality,
 * study description, accession number, patient ID, patient name ('' when absent).
 * Returns {1 when complete by MPPS, 1 when complete by counts}.
 */
const RECORD_INSTANCE = script(`
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local first = redis.call('HSETNX', KEYS[2], 'firstReceivedAt', ARGV[3])
redis.call('HSETNX', KEYS[2], 'run', '0')
redis.call('HSET', KEYS[2], 'studyUid', ARGV[4], 'lastReceivedAt', ARGV[3], 'state', 'receiving')
-- Reconcile re-indexes a file with no calling AE: it keeps the one the sender was recorded with.
if ARGV[5] ~= '' or redis.call('HEXISTS', KEYS[2], 'callingAe') == 0 then
  redis.call('HSET', KEYS[2], 'callingAe', ARGV[5])
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], 'ser:' .. ARGV[6], ARGV[13])
if ARGV[14] ~= '' then redis.call('HSETNX', KEYS[2], 'description', ARGV[14]) end
if ARGV[15] ~= '' then redis.call('HSETNX', KEYS[2], 'phi:accession', ARGV[15]) end
if ARGV[16] ~= '' then redis.call('HSETNX', KEYS[2], 'phi:patientId', ARGV[16]) end
if ARGV[17] ~= '' then redis.call('HSETNX', KEYS[2], 'phi:patientName', ARGV[17]) end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[7], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[4])
local removed = redis.call('SREM', KEYS[4], ARGV[1])
local left = redis.call('SCARD', KEYS[4])
local open = tonumber(redis.call('HGET', KEYS[5], 'open') or '0') or 0
local mpps = 0
if removed == 1 and left == 0 and open <= 0 then mpps = 1 end
if new == 0 then return {mpps, 0, first} end

local C, s = KEYS[6], ARGV[6]
local function complete()
  local e = redis.call('HGET', C, 'e:' .. s)
  if e then return tonumber(redis.call('HGET', C, 'n:' .. s) or '0') >= tonumber(e) end
  if redis.call('HEXISTS', C, 'm:' .. s) == 1 then return true end
  local ao = redis.call('HGET', C, 'ao:' .. s)
  if ao then return tonumber(ao) <= 0 end
  return false
end
if redis.call('HSETNX', C, 'r:' .. s, ARGV[11]) == 1 then redis.call('HINCRBY', C, 'series', 1) end
local before = complete()
redis.call('HINCRBY', C, 'n:' .. s, 1)
if ARGV[7] ~= '' and tonumber(ARGV[7]) > tonumber(redis.call('HGET', C, 'e:' .. s) or '0') then
  redis.call('HSET', C, 'e:' .. s, ARGV[7])
end
if ARGV[10] ~= '' then redis.call('HSET', C, 'm:' .. s, '1') end
if ARGV[8] ~= '' then
  local a = s .. ':' .. ARGV[9]
  local x0 = tonumber(redis.call('HGET', C, 'ax:' .. a) or '0')
  local i0 = tonumber(redis.call('HGET', C, 'ai:' .. a) or '0')
  local i1 = i0 + 1
  local x1 = math.max(x0, tonumber(ARGV[8]))
  redis.call('HSET', C, 'ai:' .. a, i1, 'ax:' .. a, x1)
  local d = 0
  if x0 > 0 and i0 < x0 then d = d - 1 end
  if i1 < x1 then d = d + 1 end
  redis.call('HINCRBY', C, 'ao:' .. s, d)
end
local after = complete()
if before ~= after then
  if after then redis.call('HINCRBY', C, 'complete', 1) else redis.call('HINCRBY', C, 'complete', -1) end
end

local counts = 0
local series = tonumber(redis.call('HGET', C, 'series'))
if ARGV[12] ~= '' and tonumber(redis.call('HGET', C, 'complete') or '0') == series then
  local have = {}
  local all = redis.call('HGETALL', C)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'r:' then
      for c in string.gmatch(all[i + 1], '[^,]+') do have[c] = true end
    end
  end
  for spec in string.gmatch(ARGV[12], '[^;]+') do
    local rule, minSeries, conditions = string.match(spec, '^(%d+):(%d+):(%d+)$')
    if rule and series >= tonumber(minSeries) then
      local ok = true
      for j = 0, tonumber(conditions) - 1 do
        if not have[rule .. '.' .. j] then ok = false break end
      end
      if ok then counts = 1 break end
    end
  end
end
if counts == 1 then redis.call('HSET', KEYS[2], 'completeByCounts', '1')
else redis.call('HDEL', KEYS[2], 'completeByCounts') end
return {mpps, counts, first}`);

/**
 * A run's counters moved and the study's state settled from them, atomically. KEYS: study, studies changed.
 * ARGV: run, change of pending inference jobs, change of pending deliveries, now (epoch ms), study UID.
 * A job of an earlier run moves its own counters and nothing else; a failed, receiving or no-model study keeps
 * its state. All jobs done: 'done' (spool retention counts from doneAt, src/pipeline/retention.ts); inference
 * done with deliveries outstanding: 'delivering'. A change of state is noted with Redis's time.
 */
const SETTLE_RUN = script(`
local run = ARGV[1]
local function counter(kind, delta)
  local field = 'pending' .. kind .. ':' .. run
  if tonumber(delta) ~= 0 then return redis.call('HINCRBY', KEYS[1], field, delta) end
  return tonumber(redis.call('HGET', KEYS[1], field) or '0')
end
local inference = counter('Inference', ARGV[2])
local delivery = counter('Delivery', ARGV[3])
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'failed' or state == 'receiving' or state == 'no-model' then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'currentRun') or '0') ~= tonumber(run) then return 0 end
if inference <= 0 and delivery <= 0 then
  redis.call('HSET', KEYS[1], 'state', 'done', 'detail', '', 'doneAt', ARGV[4])
elseif inference <= 0 then
  redis.call('HSET', KEYS[1], 'state', 'delivering', 'detail', '')
else
  return 0
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[5])
return 1`);

const FORGET_STUDY_IF_IDLE = `
local last = redis.call('HGET', KEYS[1], 'lastReceivedAt')
if last and last ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11])
redis.call('ZREM', KEYS[12], ARGV[2])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[13], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[2])
return 1`;

const FORGET_IF_UNCHANGED = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0`;

/** KEYS: the changed set. ARGV: the study. Scores the study with Redis's time in ms. */
const NOTE_CHANGED = `
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 0`;

/** How long a change stays noted in the studies-changed set (a console that looks less often reloads). */
export const CHANGED_KEEP_MS = 3_600_000;

/** Hash field of a run's outstanding inference or delivery jobs. */
function pendingField(kind: 'Inference' | 'Delivery', run: number): string {
  return `pending${kind}:${run}`;
}
