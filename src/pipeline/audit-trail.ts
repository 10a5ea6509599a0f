// The audit trail: what happened to each study (received, routed, inferred, delivered or failed) and every
// admin action, with who did it.
//
// Storage: append-only JSONL segments, one per UTC day, under <dataDir>/audit, each append fsync'd. Files,
// not Redis: Redis may run without persistence (CI does) and the audit must outlive it; the spool already
// lives under dataDir, so the audit shares its backups. Gateway and worker processes may append to the
// same segment: every batch is one write() on an O_APPEND descriptor, so lines never interleave. Retention
// deletes whole segments. A torn last line (power cut mid-write) is skipped when reading.
//
// Cluster view: with several gateways (and workers) each process's segments hold only what it did. Every
// record also goes to one Redis stream (keys.auditStream, MAXLEN ~ audit.streamMaxLen, with the writer's
// instance id), and query() reads the stream, so /api/audit shows the whole cluster; where the stream does
// not reach back far enough (trimmed, Redis restarted without persistence) or Redis does not answer, this
// node's segments fill in or stand alone, and the answer says which (`source`). The segments stay the durable
// copy: Redis may run without persistence. Sending to the stream never delays nor fails the fsync'd append:
// while Redis is away records wait in a bounded buffer, and beyond it they are dropped from the stream only
// (counted: aigw_audit_stream_dropped_total; they are still in the segments).
import { hostname } from 'node:os';
import { mkdir, open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { pipelineEvents } from './events.ts';
import { keys } from './keys.ts';
import { NODE_ID } from './node-id.ts';
import { auditStreamDropped } from '../observability/metrics.ts';

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

/** A stored event: the event plus when and where (host, pid, the process's instance id) it was recorded. */
export type AuditRecord = AuditEvent & { at: string; host: string; pid: number; node?: string };

/**
 * Where query() found its records: 'cluster' the Redis stream of every node alone (it reaches back far
 * enough); 'cluster+local' the stream, and this node's segments for what is older than the stream's start
 * (other nodes' older records are not included); 'local' this node's segments only (no stream, or Redis did
 * not answer).
 */
export type AuditSource = 'cluster' | 'cluster+local' | 'local';

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
  /** Records kept in the cluster stream (MAXLEN ~); 0: no stream. Needs redis. */
  streamMaxLen?: number;
}

/** Records waiting for Redis to come back before they go to the stream; beyond this the oldest are dropped. */
const STREAM_BUFFER = 10_000;
/** Records per XADD pipeline. */
const STREAM_CHUNK = 500;
/** Entries per XREVRANGE page when reading the stream. */
const STREAM_PAGE = 1_000;
/** Longest wait for one stream read; past it the query answers from the segments. */
const STREAM_READ_TIMEOUT_MS = 2_000;

function streamIdMs(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
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
  /** JSON lines waiting for the stream (Redis away or a send in progress). */
  private streamBuffer: string[] = [];
  private streaming = false;
  private waitingForReady = false;

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
    const rec: AuditRecord = {
      ...event,
      at: new Date().toISOString(),
      host: hostname(),
      pid: process.pid,
      node: NODE_ID,
    };
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
    const lines: string[] = [];
    for (const rec of batch) {
      const name = segmentName(Date.parse(rec.at));
      const line = JSON.stringify(rec);
      lines.push(line);
      bySegment.set(name, (bySegment.get(name) ?? '') + line + '\n');
    }
    // The same lines to the cluster stream, in the background: never waited for here.
    this.toStream(lines);
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

  /** Queues lines for the stream and sends what is queued while Redis is ready; bounded, never throws. */
  private toStream(lines: string[]): void {
    const { redis, prefix, streamMaxLen = 0 } = this.options ?? {};
    if (!redis || !prefix || streamMaxLen <= 0) return;
    this.streamBuffer.push(...lines);
    const over = this.streamBuffer.length - STREAM_BUFFER;
    if (over > 0) {
      this.streamBuffer.splice(0, over);
      auditStreamDropped.inc(over);
      pipelineEvents.auditStreamDropped(over, new Error('Redis away and the stream buffer is full'));
    }
    this.kickStream(redis, keys.auditStream(prefix), streamMaxLen);
  }

  /** Sends the buffer now if Redis is ready, else as soon as it is. */
  private kickStream(redis: Redis, key: string, maxLen: number): void {
    if (this.streaming) return;
    if (redis.status !== 'ready') {
      if (this.waitingForReady) return;
      this.waitingForReady = true;
      redis.once('ready', () => {
        this.waitingForReady = false;
        if (this.options?.redis === redis) this.kickStream(redis, key, maxLen);
      });
      return;
    }
    this.streaming = true;
    void this.sendStream(redis, key, maxLen).finally(() => {
      this.streaming = false;
      // Lines queued while the last chunk was out, or Redis lost meanwhile: go on, or wait for it.
      if (this.streamBuffer.length > 0 && this.options?.redis === redis) this.kickStream(redis, key, maxLen);
    });
  }

  private async sendStream(redis: Redis, key: string, maxLen: number): Promise<void> {
    while (this.streamBuffer.length > 0 && redis.status === 'ready') {
      const chunk = this.streamBuffer.splice(0, STREAM_CHUNK);
      const tx = redis.pipeline();
      for (const line of chunk) tx.xadd(key, 'MAXLEN', '~', maxLen, '*', 'node', NODE_ID, 'rec', line);
      let failed = 0;
      let firstErr: unknown;
      try {
        for (const [err] of (await tx.exec()) ?? []) {
          if (err) {
            failed++;
            firstErr ??= err;
          }
        }
      } catch (err) {
        // Unknown which landed: dropped from the stream rather than added twice (the segments have them).
        failed = chunk.length;
        firstErr = err;
      }
      if (failed > 0) {
        auditStreamDropped.inc(failed);
        pipelineEvents.auditStreamDropped(failed, firstErr);
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

  /**
   * Events matching the query, oldest first, from the whole cluster where the stream reaches back far
   * enough (see AuditSource), and from this node's segments otherwise.
   */
  async clusterQuery(q: AuditQuery = {}): Promise<{ records: AuditRecord[]; source: AuditSource }> {
    const { redis, prefix, streamMaxLen = 0 } = this.options ?? {};
    if (!redis || !prefix || streamMaxLen <= 0 || redis.status !== 'ready')
      return { records: await this.query(q), source: 'local' };
    let fromStream: { lines: string[]; complete: boolean; startMs: number } | undefined;
    try {
      fromStream = await this.readStream(redis, keys.auditStream(prefix), q);
    } catch (err) {
      pipelineEvents.auditStreamDropped(0, err);
    }
    if (fromStream === undefined) return { records: await this.query(q), source: 'local' };
    const streamed = parseRecords(fromStream.lines);
    if (fromStream.complete) return { records: streamed, source: 'cluster' };
    // The stream starts later than asked: this node's older records fill in before it.
    const have = new Set(fromStream.lines);
    const local = (await this.query({ ...q, limit: undefined })).filter(
      (r) => Date.parse(r.at) < fromStream.startMs && !have.has(JSON.stringify(r)),
    );
    const merged = [...local, ...streamed].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
    return {
      records: q.limit !== undefined ? merged.slice(-q.limit) : merged,
      source: local.length > 0 || streamed.length === 0 ? 'cluster+local' : 'cluster',
    };
  }

  /**
   * The stream's lines matching q, newest first read, returned oldest first. `complete` when the stream holds
   * everything the query asks for: `limit` matches were found, or the stream begins before `from`.
   */
  private async readStream(
    redis: Redis,
    key: string,
    q: AuditQuery,
  ): Promise<{ lines: string[]; complete: boolean; startMs: number }> {
    const bounded = <T>(p: Promise<T>): Promise<T> => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        p,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`the audit stream did not answer within ${STREAM_READ_TIMEOUT_MS} ms`)),
            STREAM_READ_TIMEOUT_MS,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    };
    const first = await bounded(redis.xrange(key, '-', '+', 'COUNT', 1));
    if (first.length === 0) return { lines: [], complete: false, startMs: Date.now() };
    const firstAt = Date.parse(
      (JSON.parse(fieldOf(first[0]![1], 'rec') ?? '{}') as { at?: string }).at ?? '',
    );
    // The stream's start, on the records' own clock: the earlier of its first id and its first record's time.
    const startMs = Number.isNaN(firstAt)
      ? streamIdMs(first[0]![0])
      : Math.min(firstAt, streamIdMs(first[0]![0]));
    const found: string[] = [];
    // Ids are Redis time at XADD, a little after the record's own time: a minute of slack at the upper end.
    let end = q.to !== undefined ? String(q.to + 60_000) : '+';
    const limit = q.limit ?? Number.POSITIVE_INFINITY;
    for (;;) {
      const page = await bounded(redis.xrevrange(key, end, '-', 'COUNT', STREAM_PAGE));
      for (const [, fields] of page) {
        const line = fieldOf(fields, 'rec');
        if (line === undefined) continue;
        let rec: AuditRecord;
        try {
          rec = JSON.parse(line) as AuditRecord;
        } catch {
          continue;
        }
        const at = Date.parse(rec.at);
        if (q.studyUid && (rec as { studyUid?: string }).studyUid !== q.studyUid) continue;
        if (q.type && rec.type !== q.type) continue;
        if (q.to !== undefined && at > q.to) continue;
        if (q.from !== undefined && at < q.from) continue;
        found.push(line);
      }
      const last = page.at(-1);
      const pastFrom = last !== undefined && q.from !== undefined && streamIdMs(last[0]) < q.from - 60_000;
      if (page.length < STREAM_PAGE || found.length >= limit || pastFrom) break;
      end = `(${last![0]}`;
    }
    const lines = found.reverse();
    const complete = found.length >= limit || (q.from !== undefined && startMs <= q.from);
    return { lines: limit < lines.length ? lines.slice(-limit) : lines, complete, startMs };
  }

  /** Events matching the query, oldest first, from this node's segments. Reads only the days in range. */
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
  'node',
] as const;

function csvCell(value: unknown): string {
  if (value === undefined || value === null) return '';
  const s = typeof value === 'object' ? JSON.stringify(value) : String(value);
  // Quote always-safe; a leading formula character is neutralised for spreadsheet users.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return `"${safe.replace(/"/g, '""')}"`;
}

/** One field of a stream entry ([name, value, name, value, …]). */
function fieldOf(fields: string[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
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
