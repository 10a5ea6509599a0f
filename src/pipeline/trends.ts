// The console's trend charts, over the last hour or day, kept per minute in Redis (keys.trends) so that
// every gateway sharing the Redis draws the same pictures: instances and new studies received, final job
// failures by stage and calling AE, reports and positive reports per model (the positive-finding rate,
// the first sign of a model drifting), and sampled queue depths. Receive → report latency comes from the
// turnaround log's minutes (turnaround.ts). Each minute's hash expires after TRENDS_TTL_S, so memory is
// bounded whatever the load. Ingest does not pay a round trip per instance: TrendCounter counts in process
// memory and flushes every few seconds.
import { runEvery } from '../util/periodic.ts';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { keys } from './keys.ts';
import { mergeHistograms, quantiles, turnaroundMinutes, type Histogram } from './turnaround.ts';

const MINUTE_MS = 60_000;
/** A minute's hash outlives the longest range charted (a day), with slack for clock skew. */
export const TRENDS_TTL_S = 26 * 3600;
/** How often ingest's in-memory counts go to Redis. */
export const TREND_FLUSH_MS = 5000;

/** What a chart may span: its length and the width of one point, in minutes. */
export const TREND_RANGES = {
  hour: { minutes: 60, step: 1 },
  day: { minutes: 1440, step: 10 },
} as const;
export type TrendRange = keyof typeof TREND_RANGES;

/** Hash fields: JSON arrays, so no name (a model's, an AE's) can be taken for another series. */
export const trendField = {
  instances: () => '["i"]',
  studies: () => '["s"]',
  failure: (stage: string, callingAe: string) => JSON.stringify(['f', stage, callingAe]),
  reports: (model: string) => JSON.stringify(['r', model]),
  positive: (model: string) => JSON.stringify(['p', model]),
  queue: (queue: string) => JSON.stringify(['q', queue]),
};

export const trendMinute = (at: number): number => Math.floor(at / MINUTE_MS);

/**
 * Counts in process memory, per minute and field, and adds them to Redis every TREND_FLUSH_MS in one
 * pipeline. Counts a flush could not write are kept for the next one (minutes already expired are dropped).
 */
export class TrendCounter {
  private pending = new Map<number, Map<string, number>>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly now: () => number = Date.now,
  ) {}

  add(field: string, n = 1, at = this.now()): void {
    const minute = trendMinute(at);
    let fields = this.pending.get(minute);
    if (!fields) this.pending.set(minute, (fields = new Map()));
    fields.set(field, (fields.get(field) ?? 0) + n);
  }

  /** One instance stored; `newStudy` when it was its study's first. */
  instance(newStudy: boolean): void {
    this.add(trendField.instances());
    if (newStudy) this.add(trendField.studies());
  }

  start(everyMs = TREND_FLUSH_MS): void {
    this.timer ??= setInterval(() => void this.flush().catch(() => undefined), everyMs);
    this.timer.unref();
  }

  async flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    const pipeline = this.redis.pipeline();
    for (const [minute, fields] of batch) {
      const key = keys.trends(this.prefix, minute);
      for (const [field, n] of fields) pipeline.hincrby(key, field, n);
      pipeline.expire(key, TRENDS_TTL_S);
    }
    this.flushing = (async () => {
      try {
        const replies = (await pipeline.exec()) ?? [];
        const failed = replies.find(([err]) => err);
        if (failed) throw failed[0];
      } catch (err) {
        // Kept for the next flush, unless the minute is older than its key would live.
        const oldest = trendMinute(this.now()) - TRENDS_TTL_S / 60;
        for (const [minute, fields] of batch)
          if (minute > oldest) for (const [field, n] of fields) this.add(field, n, minute * MINUTE_MS);
        throw err;
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flushing?.catch(() => undefined);
    await this.flush();
  }
}

/** Adds to the current minute at once (rare events: a job's final failure). */
export async function recordTrend(
  redis: Redis,
  prefix: string,
  field: string,
  n = 1,
  at = Date.now(),
): Promise<void> {
  const key = keys.trends(prefix, trendMinute(at));
  const replies = (await redis.multi().hincrby(key, field, n).expire(key, TRENDS_TTL_S).exec()) ?? [];
  for (const [err] of replies) if (err) throw err;
}

/** The queue depths sampled now, as the current minute's values (the last sample of a minute stands). */
export async function recordQueueDepths(
  redis: Redis,
  prefix: string,
  depths: { queue: string; jobs: number }[],
  at = Date.now(),
): Promise<void> {
  if (depths.length === 0) return;
  const key = keys.trends(prefix, trendMinute(at));
  const multi = redis.multi();
  for (const d of depths) multi.hset(key, trendField.queue(d.queue), String(d.jobs));
  const replies = (await multi.expire(key, TRENDS_TTL_S).exec()) ?? [];
  for (const [err] of replies) if (err) throw err;
}

type Values = (number | null)[];

/** What GET /api/trends answers: one value per point, aligned with `t`. */
export interface TrendSeries {
  range: TrendRange;
  stepSeconds: number;
  /** Start of each point, seconds since 1970 (what uPlot takes as x). */
  t: number[];
  /** Per minute, averaged over the point. */
  instancesPerMinute: number[];
  studiesPerMinute: number[];
  /** Receive → SR delivered, seconds, per priority lane and per model; null where none was delivered. */
  latency: {
    lanes: { lane: string; p50: Values; p95: Values }[];
    models: { model: string; p50: Values; p95: Values }[];
  };
  /** Jobs waiting, delayed or running, per queue: the largest sample of the point; null where none was taken. */
  queues: { queue: string; jobs: Values }[];
  /** Final job failures per point, by stage and by the calling AE of the study. */
  failuresByStage: { stage: string; count: number[] }[];
  failuresByAe: { callingAe: string; count: number[] }[];
  /** Reports per point, and the share with a positive finding (null without reports). */
  positiveRate: { model: string; reports: number[]; rate: Values }[];
}

/** Series name → one value per point. */
class Columns {
  readonly by = new Map<string, number[]>();
  constructor(private readonly points: number) {}
  add(series: string, point: number, n: number): void {
    let col = this.by.get(series);
    if (!col) this.by.set(series, (col = new Array<number>(this.points).fill(0)));
    col[point]! += n;
  }
  get(series: string): number[] {
    return this.by.get(series) ?? new Array<number>(this.points).fill(0);
  }
  names(): string[] {
    return [...this.by.keys()].sort();
  }
}

/** The charts' data over `range`, ending with the current minute. */
export async function readTrends(
  redis: Redis,
  prefix: string,
  range: TrendRange,
  now = Date.now(),
): Promise<TrendSeries> {
  const { minutes, step } = TREND_RANGES[range];
  const points = minutes / step;
  // Points are aligned on whole steps, so the same minute falls in the same point from one look to the next.
  const lastPoint = Math.floor(trendMinute(now) / step);
  const first = (lastPoint - points + 1) * step;
  const last = (lastPoint + 1) * step - 1;

  const pipeline = redis.pipeline();
  for (let m = first; m <= last; m++) pipeline.hgetall(keys.trends(prefix, m));
  const [replies, latencyMinutes] = await Promise.all([
    pipeline.exec(),
    turnaroundMinutes(redis, prefix, first, last),
  ]);

  const instances = new Columns(points);
  const studies = new Columns(points);
  const byStage = new Columns(points);
  const byAe = new Columns(points);
  const reports = new Columns(points);
  const positives = new Columns(points);
  const queueMax = new Map<string, Values>();
  for (const [i, [err, raw]] of (replies ?? []).entries()) {
    if (err) throw err;
    const point = Math.floor(i / step);
    for (const [field, value] of Object.entries((raw ?? {}) as Record<string, string>)) {
      const n = Number(value);
      let f: unknown;
      try {
        f = JSON.parse(field);
      } catch {
        continue; // not ours
      }
      if (!Array.isArray(f) || !Number.isFinite(n) || f.some((x) => typeof x !== 'string')) continue;
      const [kind, a, b] = f as string[];
      if (kind === 'i' && f.length === 1) instances.add('', point, n);
      else if (kind === 's' && f.length === 1) studies.add('', point, n);
      else if (kind === 'f' && f.length === 3) {
        byStage.add(a!, point, n);
        byAe.add(b!, point, n);
      } else if (kind === 'r' && f.length === 2) reports.add(a!, point, n);
      else if (kind === 'p' && f.length === 2) positives.add(a!, point, n);
      else if (kind === 'q' && f.length === 2) {
        let col = queueMax.get(a!);
        if (!col) queueMax.set(a!, (col = new Array<number | null>(points).fill(null)));
        col[point] = Math.max(col[point] ?? 0, n);
      }
    }
  }

  const laneHist: Map<string, Histogram>[] = Array.from({ length: points }, () => new Map());
  const modelHist: Map<string, Histogram>[] = Array.from({ length: points }, () => new Map());
  for (const [i, minute] of latencyMinutes.entries()) {
    const point = Math.floor(i / step);
    mergeHistograms(laneHist[point]!, minute.lanes);
    mergeHistograms(modelHist[point]!, minute.models);
  }
  const quantileSeries = (hists: Map<string, Histogram>[]) => {
    const names = [...new Set(hists.flatMap((h) => [...h.keys()]))].sort();
    return names.map((name) => {
      const q = hists.map((h) => quantiles(h.get(name)));
      return { name, p50: q.map((x) => x.p50), p95: q.map((x) => x.p95) };
    });
  };

  const perMinute = (col: number[]) => col.map((n) => Math.round((n / step) * 100) / 100);
  return {
    range,
    stepSeconds: step * 60,
    t: Array.from({ length: points }, (_, p) => (first + p * step) * 60),
    instancesPerMinute: perMinute(instances.get('')),
    studiesPerMinute: perMinute(studies.get('')),
    latency: {
      lanes: quantileSeries(laneHist).map(({ name, p50, p95 }) => ({ lane: name, p50, p95 })),
      models: quantileSeries(modelHist).map(({ name, p50, p95 }) => ({ model: name, p50, p95 })),
    },
    queues: [...queueMax.entries()]
      .sort((x, y) => x[0].localeCompare(y[0]))
      .map(([queue, jobs]) => ({ queue, jobs })),
    failuresByStage: byStage.names().map((stage) => ({ stage, count: byStage.get(stage) })),
    failuresByAe: byAe.names().map((callingAe) => ({ callingAe, count: byAe.get(callingAe) })),
    positiveRate: reports.names().map((model) => {
      const r = reports.get(model);
      const p = positives.get(model);
      return {
        model,
        reports: r,
        rate: r.map((n, i) => (n > 0 ? Math.round((p[i]! / n) * 1000) / 1000 : null)),
      };
    }),
  };
}

/** How often the gateway samples the queue depths for the charts. */
export const QUEUE_SAMPLE_MS = 15_000;

/**
 * Samples the jobs waiting, delayed or running in each queue now and every `everyMs` into the current
 * minute's trends; returns the stop function. A failed sample (Redis away) is skipped.
 */
export function sampleQueueDepths(
  redis: Redis,
  prefix: string,
  queues: Queue[] | (() => Promise<Queue[]>),
  everyMs = QUEUE_SAMPLE_MS,
): () => void {
  const sample = async () => {
    // A function is read at each sample: the per-model inference queues come and go with the models.
    const list = typeof queues === 'function' ? await queues() : queues;
    const depths = await Promise.all(
      list.map(async (q) => {
        const c = await q.getJobCounts('waiting', 'prioritized', 'delayed', 'active');
        const jobs = (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0) + (c.active ?? 0);
        return { queue: q.name, jobs };
      }),
    );
    await recordQueueDepths(redis, prefix, depths);
  };
  return runEvery(everyMs, sample);
}
