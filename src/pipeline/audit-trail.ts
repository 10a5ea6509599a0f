// The audit trail: what happened to each study (received, routed, inferred, delivered or failed) and every
// admin action, with who did it.
//
// Storage: append-only JSONL segments, one per UTC day, under <dataDir>/audit, each append fsync'd. Files,
// not Redis: Redis may run without persistence (CI does) and the audit must outlive it; the spool already
// lives under dataDir, so the audit shares its backups. Gateway and worker processes may append to the
// same segment: every batch is one write() on an O_APPEND descriptor, so lines never interleave. Retention
// deletes whole segments. A torn last line (power cut mid-write) is skipped when reading.
import { hostname } from 'node:os';
import { mkdir, open, readdir, readFile, stat, unlink } from 'node:fs/promises';
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
  /**
   * With Redis, each study also keeps a small summary (stage times, models) for the study list, and an
   * index of its events for its page (studyEvents).
   */
  redis?: Redis;
  prefix?: string;
  /** How many bytes of the newest segments a study page reads when the study's index is missing. */
  studyScanBytes?: number;
}

const DAY_MS = 86_400_000;
const SEGMENT = /^audit-(\d{4}-\d{2}-\d{2})\.jsonl$/;
/** Instances of one study from one AE are summed into one 'received' event after this much quiet. */
const RECEIVED_QUIET_MS = 500;

/** The newest events of one study its page shows (the export, /api/audit, has them all). */
export const STUDY_EVENTS_KEPT = 500;
/** How much of the newest segments a study page reads when its index is missing (see studyEvents). */
const STUDY_SCAN_BYTES = 64 * 1024 * 1024;
/** A study whose bounded scan found nothing is not scanned again for this long. */
const STUDY_SCAN_QUIET_MS = 60_000;

// The study's event index, appended to with each of its events, atomically with the check: the list is
// started only by the study's first summarised event (its audit summary hash does not exist yet). Any other
// event appends only to an existing list, so a study whose older events are in the segments but not in Redis
// (written before the index existed, or a lost index) has no list, and its page rebuilds it from the
// segments instead of showing a list that begins halfway.
// KEYS: the event list, the audit summary hash. ARGV: the JSON line, how many to keep, TTL ms, '1' when
// this event may start the list.
const INDEX_EVENT = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[4] ~= '1' or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`;

// Rebuilds a study's event list from the lines a segment scan found (oldest first), merged with whatever
// was appended meanwhile: the scanned lines go before it, a line already there is not added twice.
// KEYS: the event list. ARGV: how many to keep, TTL ms, the lines...
const REBUILD_INDEX = `
local have = {}
for _, line in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do have[line] = true end
for i = #ARGV, 3, -1 do
  if not have[ARGV[i]] then redis.call('LPUSH', KEYS[1], ARGV[i]) end
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('LLEN', KEYS[1])`;

/** Parses JSON lines into records, oldest first; a torn or foreign line is skipped. */
function parseRecords(lines: string[]): AuditRecord[] {
  const out: AuditRecord[] = [];
  for (const line of lines) {
    try {
      const rec = JSON.parse(line) as AuditRecord;
      if (rec && typeof rec.at === 'string' && typeof rec.type === 'string') out.push(rec);
    } catch {
      // a torn line from a crash mid-append
    }
  }
  return out.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
}

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
  /** Studies whose bounded scan found nothing, until when: a polled page does not rescan every 2 s. */
  private readonly scannedEmpty = new Map<string, number>();

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
    const rec: AuditRecord = { ...event, at: new Date().toISOString(), host: hostname(), pid: process.pid };
    this.pending.push(rec);
    void this.summarise(rec);
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

  /**
   * Keeps the study list's per-stage times, and the study page's event index, without reading segments for
   * every row or every poll. The index gets the record's exact JSON line, as the segment has it.
   */
  private async summarise(rec: AuditRecord): Promise<void> {
    const { redis, prefix } = this.options ?? {};
    const studyUid = (rec as { studyUid?: string }).studyUid;
    if (!redis || !prefix || !studyUid) return;
    const key = keys.auditStudy(prefix, studyUid);
    const ttl = (this.options?.retentionDays ?? 30) * DAY_MS;
    const tx = redis
      .multi()
      .eval(
        INDEX_EVENT,
        2,
        keys.auditStudyEvents(prefix, studyUid),
        key,
        JSON.stringify(rec),
        STUDY_EVENTS_KEPT,
        ttl,
        rec.type === 'action' ? '0' : '1',
      );
    const event: AuditEvent = rec;
    if (event.type !== 'action') {
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
      tx.hset(key, fields).pexpire(key, ttl);
    }
    try {
      const results = (await tx.exec()) ?? [];
      if (results[0]?.[0]) pipelineEvents.auditIndexFailed(studyUid, results[0][0]);
      const summaryErr = results.slice(1).find(([err]) => err)?.[0];
      if (summaryErr) throw summaryErr;
    } catch (err) {
      pipelineEvents.auditSummaryFailed(studyUid, err);
    }
  }

  /**
   * One study's events for its page, oldest first: the newest STUDY_EVENTS_KEPT of them, read from the
   * study's index in Redis, so a page costs what that study has, however long the trail. Without an index
   * (no Redis, a study older than the index, Redis wiped) the newest segments are scanned, at most
   * studyScanBytes of them, and the index rebuilt from what was found. The export (query) reads everything.
   */
  async studyEvents(studyUid: string): Promise<AuditRecord[]> {
    const opts = this.options;
    if (!opts) return [];
    const { redis, prefix } = opts;
    const key = redis && prefix ? keys.auditStudyEvents(prefix, studyUid) : undefined;
    if (redis && key) {
      const lines = await redis.lrange(key, 0, -1);
      if (lines.length > 0) return parseRecords(lines);
    }
    if ((this.scannedEmpty.get(studyUid) ?? 0) > Date.now()) return [];
    await this.writing;
    const lines = (await this.scanStudy(opts.dir, studyUid, opts.studyScanBytes ?? STUDY_SCAN_BYTES)).slice(
      -STUDY_EVENTS_KEPT,
    );
    if (lines.length === 0) {
      if (this.scannedEmpty.size >= 10_000) this.scannedEmpty.clear();
      this.scannedEmpty.set(studyUid, Date.now() + STUDY_SCAN_QUIET_MS);
      return [];
    }
    if (redis && key) {
      const ttl = opts.retentionDays * DAY_MS;
      await redis.eval(REBUILD_INDEX, 1, key, STUDY_EVENTS_KEPT, ttl, ...lines).catch((err: unknown) => {
        pipelineEvents.auditIndexFailed(studyUid, err);
      });
    }
    return parseRecords(lines);
  }

  /**
   * The study's lines in the newest segments, oldest first, reading at most `budget` bytes (the tail of
   * the oldest segment it reaches). A cheap substring test comes before parsing each line.
   */
  private async scanStudy(dir: string, studyUid: string, budget: number): Promise<string[]> {
    const needle = `"studyUid":${JSON.stringify(studyUid)}`;
    const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => SEGMENT.test(n)).sort();
    const found: string[][] = [];
    let left = budget;
    for (const name of names.reverse()) {
      if (left <= 0) break;
      const file = path.join(dir, name);
      let text: string;
      try {
        const size = (await stat(file)).size;
        const start = Math.max(0, size - left);
        left -= size - start;
        const fh = await open(file, 'r');
        try {
          const buf = Buffer.alloc(size - start);
          await fh.read(buf, 0, buf.length, start);
          text = buf.toString('utf8');
        } finally {
          await fh.close();
        }
        // Started mid-file: the first line is partial.
        if (start > 0) text = text.slice(text.indexOf('\n') + 1);
      } catch {
        continue; // deleted by retention meanwhile
      }
      const lines: string[] = [];
      for (const line of text.split('\n')) {
        if (!line.includes(needle)) continue;
        try {
          if ((JSON.parse(line) as { studyUid?: unknown }).studyUid === studyUid) lines.push(line);
        } catch {
          // a torn line
        }
      }
      found.push(lines);
    }
    return found.reverse().flat();
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
