// The audit trail: what happened to each study (received, routed, inferred, delivered or failed) and every
// admin action, with who did it.
//
// Storage: append-only JSONL segments, one per UTC day, under <dataDir>/audit, each append fsync'd. Files,
// not Redis: Redis may run without persistence (CI does) and the audit must outlive it; the spool already
// lives under dataDir, so the audit shares its backups. Gateway and worker processes may append to the
// same segment: every batch is one write() on an O_APPEND descriptor, so lines never interleave. Retention
// deletes whole segments. A torn last line (power cut mid-write) is skipped when reading.
import { hostname } from 'node:os';
import { mkdir, open, readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { pipelineEvents } from './events.ts';
import { keys } from './keys.ts';

export type AuditEvent =
  | {
      type: 'received';
      studyUid: string;
      callingAe: string;
      address: string;
      instances: number;
      bytes: number;
      firstAt: string;
      lastAt: string;
    }
  | {
      type: 'routed';
      studyUid: string;
      run: number;
      instances: number;
      jobs: { model: string; version: string; destinations: string[]; jobId: string }[];
      detail?: string;
    }
  | {
      type: 'inferred';
      studyUid: string;
      run: number;
      model: string;
      version: string;
      provider: string;
      srUid: string;
      instances: number;
      inferenceMs: number;
      jobId: string;
    }
  | {
      type: 'delivered';
      studyUid: string;
      srUid: string;
      destination: string;
      jobId: string;
      attempt: number;
    }
  | { type: 'failed'; studyUid: string; stage: string; reason: string; jobId: string }
  | {
      type: 'action';
      actor: string;
      role: string;
      action: string;
      target: string;
      studyUid?: string;
      result: 'ok' | 'refused' | 'error';
      detail?: string;
    };

export type AuditType = AuditEvent['type'];
export const AUDIT_TYPES: AuditType[] = ['received', 'routed', 'inferred', 'delivered', 'failed', 'action'];

/** A stored event: the event plus when and where it was recorded. */
export type AuditRecord = AuditEvent & { at: string; host: string; pid: number };

export interface AuditQuery {
  studyUid?: string;
  type?: AuditType;
  /** Inclusive bounds, milliseconds since the epoch. */
  from?: number;
  to?: number;
  limit?: number;
}

export interface AuditOptions {
  dir: string;
  retentionDays: number;
  /** With Redis, each study also keeps a small summary (stage times, models) for the study list. */
  redis?: Redis;
  prefix?: string;
}

const DAY_MS = 86_400_000;
const SEGMENT = /^audit-(\d{4}-\d{2}-\d{2})\.jsonl$/;
/** Instances of one study from one AE are summed into one 'received' event after this much quiet. */
const RECEIVED_QUIET_MS = 500;

/** Redis hash with the study's stage times and models, derived from its audit events. */

function segmentName(ms: number): string {
  return `audit-${new Date(ms).toISOString().slice(0, 10)}.jsonl`;
}

interface ReceivedBatch {
  studyUid: string;
  callingAe: string;
  address: string;
  instances: number;
  bytes: number;
  firstAt: number;
  lastAt: number;
  timer: NodeJS.Timeout;
}

export class AuditTrail {
  private options: AuditOptions | undefined;
  private pending: AuditRecord[] = [];
  private writing: Promise<void> = Promise.resolve();
  private flushScheduled: Promise<void> | undefined;
  private readonly received = new Map<string, ReceivedBatch>();
  private pruneTimer: NodeJS.Timeout | undefined;

  /** Starts recording. Until then (unit tests, tools) events are dropped. */
  async open(options: AuditOptions): Promise<void> {
    await mkdir(options.dir, { recursive: true });
    this.options = options;
    await this.prune();
    this.pruneTimer = setInterval(() => void this.prune(), 6 * 3600_000);
    this.pruneTimer.unref();
  }

  async close(): Promise<void> {
    for (const batch of [...this.received.values()]) this.emitReceived(batch);
    await this.flush();
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.options = undefined;
  }

  /**
   * Records one event; resolves once it is on disk. Never throws: a failing audit disk is logged, and the
   * pipeline carries on (the spool's own checks stop ingest when the disk is really gone).
   */
  record(event: AuditEvent): Promise<void> {
    if (!this.options) return Promise.resolve();
    this.pending.push({ ...event, at: new Date().toISOString(), host: hostname(), pid: process.pid });
    void this.summarise(event);
    this.flushScheduled ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      this.flushScheduled = undefined;
      return this.flush();
    });
    return this.flushScheduled;
  }

  /** Counts one stored instance; one 'received' event per study and sender follows a short quiet. */
  noteReceived(studyUid: string, callingAe: string, address: string, bytes: number, at = Date.now()): void {
    if (!this.options) return;
    const key = `${studyUid}|${callingAe}|${address}`;
    const batch = this.received.get(key);
    if (batch) {
      batch.instances += 1;
      batch.bytes += bytes;
      batch.lastAt = Math.max(batch.lastAt, at);
      batch.timer.refresh();
      return;
    }
    const fresh: ReceivedBatch = {
      studyUid,
      callingAe,
      address,
      instances: 1,
      bytes,
      firstAt: at,
      lastAt: at,
      timer: setTimeout(() => this.emitReceived(fresh), RECEIVED_QUIET_MS),
    };
    this.received.set(key, fresh);
  }

  /** Writes out the study's pending 'received' counts now (the router calls it before 'routed'). */
  async flushReceived(studyUid: string): Promise<void> {
    const batches = [...this.received.values()].filter((b) => b.studyUid === studyUid);
    await Promise.all(batches.map((b) => this.emitReceived(b)));
  }

  private emitReceived(batch: ReceivedBatch): Promise<void> {
    clearTimeout(batch.timer);
    this.received.delete(`${batch.studyUid}|${batch.callingAe}|${batch.address}`);
    return this.record({
      type: 'received',
      studyUid: batch.studyUid,
      callingAe: batch.callingAe,
      address: batch.address,
      instances: batch.instances,
      bytes: batch.bytes,
      firstAt: new Date(batch.firstAt).toISOString(),
      lastAt: new Date(batch.lastAt).toISOString(),
    });
  }

  private flush(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return this.writing;
    this.writing = this.writing.then(() => this.append(batch));
    return this.writing;
  }

  private async append(batch: AuditRecord[]): Promise<void> {
    const dir = this.options?.dir;
    if (!dir) return;
    const bySegment = new Map<string, string>();
    for (const rec of batch) {
      const name = segmentName(Date.parse(rec.at));
      bySegment.set(name, (bySegment.get(name) ?? '') + JSON.stringify(rec) + '\n');
    }
    for (const [name, text] of bySegment) {
      try {
        const fh = await open(path.join(dir, name), 'a', 0o640);
        try {
          await fh.write(text);
          await fh.datasync();
        } finally {
          await fh.close();
        }
      } catch (err) {
        pipelineEvents.auditWriteFailed(name, err);
      }
    }
  }

  /** Keeps the study list's per-stage times without reading segments for every row. */
  private async summarise(event: AuditEvent): Promise<void> {
    const { redis, prefix } = this.options ?? {};
    if (!redis || !prefix || event.type === 'action') return;
    const key = keys.auditStudy(prefix, event.studyUid);
    const now = String(Date.now());
    const fields: Record<string, string> = {};
    if (event.type === 'received') fields.receivedAt = String(Date.parse(event.lastAt));
    else if (event.type === 'routed') {
      fields.routedAt = now;
      fields.run = String(event.run);
    } else if (event.type === 'inferred') {
      fields.inferredAt = now;
      fields[`model:${event.model}@${event.version}`] = JSON.stringify({
        run: event.run,
        provider: event.provider,
        srUid: event.srUid,
        inferenceMs: event.inferenceMs,
      });
    } else if (event.type === 'delivered') fields.deliveredAt = now;
    else if (event.type === 'failed') {
      fields.failedAt = now;
      fields.failure = `${event.stage}: ${event.reason}`;
    }
    try {
      await redis
        .multi()
        .hset(key, fields)
        .pexpire(key, (this.options?.retentionDays ?? 30) * DAY_MS)
        .exec();
    } catch (err) {
      pipelineEvents.auditSummaryFailed(event.studyUid, err);
    }
  }

  /** Events matching the query, oldest first. Reads only the segments of the days in range. */
  async query(q: AuditQuery = {}): Promise<AuditRecord[]> {
    const dir = this.options?.dir;
    if (!dir) return [];
    await this.writing;
    const fromDay = q.from !== undefined ? segmentName(q.from) : undefined;
    const toDay = q.to !== undefined ? segmentName(q.to) : undefined;
    const names = (await readdir(dir))
      .filter((n) => SEGMENT.test(n))
      .filter((n) => (!fromDay || n >= fromDay) && (!toDay || n <= toDay))
      .sort();
    const out: AuditRecord[] = [];
    for (const name of names) {
      const text = await readFile(path.join(dir, name), 'utf8').catch(() => '');
      for (const line of text.split('\n')) {
        if (!line) continue;
        let rec: AuditRecord;
        try {
          rec = JSON.parse(line) as AuditRecord;
        } catch {
          continue; // a torn line from a crash mid-append
        }
        const at = Date.parse(rec.at);
        if (q.studyUid && (rec as { studyUid?: string }).studyUid !== q.studyUid) continue;
        if (q.type && rec.type !== q.type) continue;
        if (q.from !== undefined && at < q.from) continue;
        if (q.to !== undefined && at > q.to) continue;
        out.push(rec);
      }
    }
    out.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
    return q.limit !== undefined ? out.slice(-q.limit) : out;
  }

  /** Deletes segments older than the retention period; returns their names. */
  async prune(now = Date.now()): Promise<string[]> {
    const opts = this.options;
    if (!opts) return [];
    const oldestKept = segmentName(now - opts.retentionDays * DAY_MS);
    const removed: string[] = [];
    for (const name of await readdir(opts.dir).catch(() => [] as string[])) {
      if (!SEGMENT.test(name) || name >= oldestKept) continue;
      await unlink(path.join(opts.dir, name)).catch(() => undefined);
      removed.push(name);
    }
    if (removed.length) pipelineEvents.auditPruned(removed);
    return removed;
  }
}

const CSV_COLUMNS = [
  'at',
  'type',
  'studyUid',
  'callingAe',
  'address',
  'instances',
  'bytes',
  'run',
  'model',
  'version',
  'provider',
  'srUid',
  'destination',
  'stage',
  'reason',
  'actor',
  'role',
  'action',
  'target',
  'result',
  'jobId',
  'host',
] as const;

function csvCell(value: unknown): string {
  if (value === undefined || value === null) return '';
  const s = typeof value === 'object' ? JSON.stringify(value) : String(value);
  // Quote always-safe; a leading formula character is neutralised for spreadsheet users.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return `"${safe.replace(/"/g, '""')}"`;
}

export function auditToCsv(records: AuditRecord[]): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const rec of records) {
    const row = rec as unknown as Record<string, unknown>;
    lines.push(
      CSV_COLUMNS.map((c) => csvCell(c === 'reason' ? (row.reason ?? row.detail) : row[c])).join(','),
    );
  }
  return lines.join('\r\n') + '\r\n';
}

/** The process's audit trail; roles.ts opens it, pipeline code records into it. */
export const audit = new AuditTrail();
