// Receive → SR delivered, kept per minute in Redis so that every gateway sharing the Redis sees the same
// last hour: the console's p50/p95 per priority and model, and each rule's SLO. One hash per minute
// (keys.turnaround), expiring after TURNAROUND_TTL_S; its fields count deliveries per series and per
// logarithmic time bucket, so memory is bounded whatever the load, and quantiles are within
// BUCKET_RATIO/2 (±2.5 %) of the exact value.
import type { Redis } from 'ioredis';
import { keys } from './keys.ts';

const MINUTE_MS = 60_000;
/** The window the console and the SLOs look at. */
export const TURNAROUND_WINDOW_MS = 3600_000;
/** A minute's hash outlives the longest window it serves (the trend charts' day), with slack for skew. */
export const TURNAROUND_TTL_S = 26 * 3600;
/** Bucket i holds [BASE·RATIOⁱ, BASE·RATIOⁱ⁺¹) seconds; below BASE is bucket 0, above the last the last. */
const BUCKET_BASE_S = 0.01;
const BUCKET_RATIO = 1.05;
const LAST_BUCKET = 400; // 0.01 · 1.05⁴⁰⁰ ≈ 3·10⁶ s: over a month

export function bucketOf(seconds: number): number {
  if (!(seconds > BUCKET_BASE_S)) return 0;
  const i = Math.floor(Math.log(seconds / BUCKET_BASE_S) / Math.log(BUCKET_RATIO));
  return Math.min(LAST_BUCKET, i);
}

/** The bucket's geometric middle: what a quantile falling in it is reported as. */
function bucketValue(i: number): number {
  return BUCKET_BASE_S * BUCKET_RATIO ** (i + 0.5);
}

/** One SR delivered: its study's lane ('stat', 'routine', 'p<n>'), its model and the rules that routed it. */
export interface TurnaroundSample {
  lane: string;
  model: string;
  rules: string[];
  seconds: number;
  /** When it was delivered (ms since 1970); now when unset. */
  at?: number;
}

export interface Quantiles {
  count: number;
  /** Seconds; null without samples. */
  p50: number | null;
  p95: number | null;
}

export interface SloStatus extends Quantiles {
  rule: string;
  targetP95Seconds: number;
  /** The last hour's p95 is over the target. */
  breached: boolean;
}

export interface TurnaroundSummary {
  windowSeconds: number;
  /** Per priority lane, every model together. */
  lanes: ({ lane: string } & Quantiles)[];
  /** Per priority lane and model. */
  models: ({ lane: string; model: string } & Quantiles)[];
  /** Every rule that has an SLO, with or without samples. */
  slos: SloStatus[];
}

/** Series a sample counts in; JSON arrays, so no name (a rule's, a model's) can be taken for another's. */
const laneModelField = (lane: string, model: string, bucket: number) =>
  JSON.stringify(['m', lane, model, bucket]);
const ruleField = (rule: string, bucket: number) => JSON.stringify(['r', rule, bucket]);

/** Logarithmic bucket → count. */
export type Histogram = Map<number, number>;

function add(into: Map<string, Histogram>, series: string, bucket: number, count: number): void {
  let h = into.get(series);
  if (!h) into.set(series, (h = new Map()));
  h.set(bucket, (h.get(bucket) ?? 0) + count);
}

export function quantiles(h: Histogram | undefined): Quantiles {
  const entries = [...(h ?? new Map<number, number>()).entries()].sort((a, b) => a[0] - b[0]);
  const count = entries.reduce((n, [, c]) => n + c, 0);
  const at = (q: number): number | null => {
    if (count === 0) return null;
    const rank = Math.ceil(q * count);
    let seen = 0;
    for (const [bucket, c] of entries) {
      seen += c;
      if (seen >= rank) return Math.round(bucketValue(bucket) * 1000) / 1000;
    }
    return null;
  };
  return { count, p50: at(0.5), p95: at(0.95) };
}

export class TurnaroundLog {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    /** Rule name → p95 target in seconds (config routing.rules[].slo). */
    private readonly targets: ReadonlyMap<string, number> = new Map(),
    private readonly now: () => number = Date.now,
  ) {}

  async record(sample: TurnaroundSample): Promise<void> {
    const at = sample.at ?? this.now();
    const key = keys.turnaround(this.prefix, Math.floor(at / MINUTE_MS));
    const bucket = bucketOf(sample.seconds);
    const multi = this.redis.multi().hincrby(key, laneModelField(sample.lane, sample.model, bucket), 1);
    for (const rule of new Set(sample.rules)) multi.hincrby(key, ruleField(rule, bucket), 1);
    multi.expire(key, TURNAROUND_TTL_S);
    const replies = (await multi.exec()) ?? [];
    for (const [err] of replies) if (err) throw err;
  }

  /** The last hour (the current minute included), per lane, per lane and model, and per rule SLO. */
  async summary(): Promise<TurnaroundSummary> {
    const last = Math.floor(this.now() / MINUTE_MS);
    const minutes = TURNAROUND_WINDOW_MS / MINUTE_MS;
    const pipeline = this.redis.pipeline();
    for (let m = last - minutes + 1; m <= last; m++) pipeline.hgetall(keys.turnaround(this.prefix, m));
    const lanes = new Map<string, Histogram>();
    const models = new Map<string, Histogram>();
    const rules = new Map<string, Histogram>();
    for (const [err, fields] of (await pipeline.exec()) ?? []) {
      if (err) throw err;
      for (const f of minuteFields(fields)) {
        if (f.kind === 'model') {
          add(lanes, f.lane, f.bucket, f.count);
          add(models, JSON.stringify([f.lane, f.model]), f.bucket, f.count);
        } else add(rules, f.rule, f.bucket, f.count);
      }
    }
    return {
      windowSeconds: TURNAROUND_WINDOW_MS / 1000,
      lanes: [...lanes.entries()]
        .map(([lane, h]) => ({ lane, ...quantiles(h) }))
        .sort((a, b) => a.lane.localeCompare(b.lane)),
      models: [...models.entries()]
        .map(([series, h]) => {
          const [lane, model] = JSON.parse(series) as [string, string];
          return { lane, model, ...quantiles(h) };
        })
        .sort((a, b) => a.lane.localeCompare(b.lane) || a.model.localeCompare(b.model)),
      slos: [...this.targets.entries()].map(([rule, target]) => {
        const q = quantiles(rules.get(rule));
        return { rule, targetP95Seconds: target, ...q, breached: q.p95 !== null && q.p95 > target };
      }),
    };
  }
}

/** One minute's deliveries per lane and per model (every lane together), as histograms. */
export interface MinuteHistograms {
  lanes: Map<string, Histogram>;
  models: Map<string, Histogram>;
}

/**
 * Minutes `first`..`last` (minute = ms since 1970 / 60 000), one entry each, for the trend charts: per lane
 * and per model, so a chart can merge any run of minutes and read quantiles off the merged histogram.
 */
export async function turnaroundMinutes(
  redis: Redis,
  prefix: string,
  first: number,
  last: number,
): Promise<MinuteHistograms[]> {
  const pipeline = redis.pipeline();
  for (let m = first; m <= last; m++) pipeline.hgetall(keys.turnaround(prefix, m));
  const out: MinuteHistograms[] = [];
  for (const [err, fields] of (await pipeline.exec()) ?? []) {
    if (err) throw err;
    const minute: MinuteHistograms = { lanes: new Map(), models: new Map() };
    for (const f of minuteFields(fields)) {
      if (f.kind !== 'model') continue;
      add(minute.lanes, f.lane, f.bucket, f.count);
      add(minute.models, f.model, f.bucket, f.count);
    }
    out.push(minute);
  }
  return out;
}

type MinuteField =
  | { kind: 'model'; lane: string; model: string; bucket: number; count: number }
  | { kind: 'rule'; rule: string; bucket: number; count: number };

/** The fields of one minute's hash, parsed and checked (laneModelField / ruleField); others skipped. */
function minuteFields(fields: unknown): MinuteField[] {
  const out: MinuteField[] = [];
  for (const [field, raw] of Object.entries((fields ?? {}) as Record<string, string>)) {
    const count = Number(raw);
    let parsed: unknown;
    try {
      parsed = JSON.parse(field);
    } catch {
      continue; // not ours
    }
    if (!Array.isArray(parsed) || !Number.isFinite(count)) continue;
    const [kind, a, b, c] = parsed as unknown[];
    if (kind === 'm' && parsed.length === 4 && typeof a === 'string' && typeof b === 'string')
      if (Number.isInteger(c)) out.push({ kind: 'model', lane: a, model: b, bucket: c as number, count });
    if (kind === 'r' && parsed.length === 3 && typeof a === 'string' && Number.isInteger(b))
      out.push({ kind: 'rule', rule: a, bucket: b as number, count });
  }
  return out;
}

/** Adds every count of `from` into `into`. */
export function mergeHistograms(into: Map<string, Histogram>, from: Map<string, Histogram>): void {
  for (const [series, h] of from) for (const [bucket, c] of h) add(into, series, bucket, c);
}

/** Rule name → p95 target, for the rules that set an SLO. */
export function sloTargets(rules: { name: string; slo?: { p95Seconds: number } }[]): Map<string, number> {
  const targets = new Map<string, number>();
  for (const r of rules) if (r.slo && !targets.has(r.name)) targets.set(r.name, r.slo.p95Seconds);
  return targets;
}
