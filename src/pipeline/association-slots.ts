// Cluster-wide DIMSE association limits. With several gateways behind one address, dimse.limits
// (maxAssociations, maxAssociationsPerPeer, a peer's own maxAssociations) hold for the whole cluster, not per
// process: each limit scope (`total`, `peer:<calling AE>`) is a sorted set in Redis of the open associations'
// ids, scored by when the entry expires (Redis time). One Lua script per association request drops expired
// entries, counts, and adds the association to every scope only if all are under their limit (one round
// trip). The entries of a live association are refreshed every ttl/3 and removed when it ends; a gateway that
// crashed leaves entries that expire within ttl.
//
// Bounded: negotiation waits at most `timeoutMs` for Redis. When Redis does not answer in time (or is away),
// the association is admitted on this process's own limits alone ('unavailable', logged and counted); ingest
// refuses C-STOREs during a Redis outage anyway (A700).
import type { Redis } from 'ioredis';
import { associationLimitFallbacks } from '../observability/metrics.ts';
import { pipelineEvents } from './events.ts';
import { keys } from './keys.ts';
import { NODE_ID } from './node-id.ts';

// KEYS: one sorted set per scope. ARGV: association id, ttl ms, then one limit per key. A key's own expiry only
// ever grows (a gateway configured with a shorter ttl does not cut another's entries short).
// Returns 0 when added everywhere, else the 1-based index of the first scope at its limit (nothing added).
const ACQUIRE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i, k in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
end
for i, k in ipairs(KEYS) do
  if redis.call('ZCARD', k) >= tonumber(ARGV[2 + i]) then return i end
end
for i, k in ipairs(KEYS) do
  redis.call('ZADD', k, now + ttl, ARGV[1])
  if redis.call('PTTL', k) < ttl * 2 then redis.call('PEXPIRE', k, ttl * 2) end
end
return 0`;

// KEYS: the scope of each entry; ARGV: ttl ms, then the association id of each entry (same order).
// Only entries still there are extended (XX): one that expired, or was removed, stays gone.
const REFRESH = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  redis.call('ZADD', k, 'XX', now + ttl, ARGV[i + 1])
  if redis.call('PTTL', k) < ttl * 2 then redis.call('PEXPIRE', k, ttl * 2) end
end
return #KEYS`;

export interface SlotLimit {
  /** 'total', or 'peer:<calling AE>'. */
  scope: string;
  limit: number;
}

export type SlotOutcome =
  | { outcome: 'acquired'; release: () => void }
  /** `index`: which of the limits asked for is full. */
  | { outcome: 'full'; index: number }
  /** Redis did not answer in time: the caller applies its local limits; release() still removes any entry. */
  | { outcome: 'unavailable'; release: () => void };

export interface AssociationSlotsOptions {
  /** The ingest path's fail-fast connection (createIngestRedis). */
  redis: Redis;
  prefix: string;
  /** How long an entry lives without a refresh (a crashed gateway's associations free up after this). */
  ttlMs?: number;
  /** Longest wait for Redis during negotiation. */
  timeoutMs?: number;
  /** Prefix of this process's association ids (NODE_ID unless a test runs several in one process). */
  nodeId?: string;
}

export const SLOT_TTL_MS = 60_000;
export const SLOT_TIMEOUT_MS = 300;

export class AssociationSlots {
  private readonly ttlMs: number;
  private readonly timeoutMs: number;
  private readonly nodeId: string;
  private seq = 0;
  /** Association id → the keys it is counted in, while it lives. */
  private readonly live = new Map<string, string[]>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: AssociationSlotsOptions) {
    this.ttlMs = opts.ttlMs ?? SLOT_TTL_MS;
    this.timeoutMs = opts.timeoutMs ?? SLOT_TIMEOUT_MS;
    this.nodeId = opts.nodeId ?? NODE_ID;
  }

  /** Open associations of this process counted in Redis (or attempted while Redis was slow). */
  get size(): number {
    return this.live.size;
  }

  async acquire(limits: readonly SlotLimit[]): Promise<SlotOutcome> {
    const id = `${this.nodeId}:${++this.seq}`;
    const slotKeys = limits.map((l) => keys.associationSlots(this.opts.prefix, l.scope));
    let timer: NodeJS.Timeout | undefined;
    let answer: unknown;
    try {
      answer = await Promise.race([
        this.opts.redis.eval(
          ACQUIRE,
          slotKeys.length,
          ...slotKeys,
          id,
          this.ttlMs,
          ...limits.map((l) => l.limit),
        ),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${this.timeoutMs} ms`)),
            this.timeoutMs,
          );
        }),
      ]);
    } catch (err) {
      // The script may still land after we stopped waiting: track the id so the refresh keeps it counted
      // while the association lives and release() removes it.
      this.track(id, slotKeys);
      associationLimitFallbacks.inc();
      pipelineEvents.associationSlotsUnavailable(err);
      return { outcome: 'unavailable', release: () => this.release(id) };
    } finally {
      clearTimeout(timer);
    }
    const full = Number(answer);
    if (full > 0) return { outcome: 'full', index: full - 1 };
    this.track(id, slotKeys);
    return { outcome: 'acquired', release: () => this.release(id) };
  }

  private track(id: string, slotKeys: string[]): void {
    this.live.set(id, slotKeys);
    if (this.timer) return;
    this.timer = setInterval(() => void this.refresh(), Math.max(100, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  private release(id: string): void {
    const slotKeys = this.live.get(id);
    if (!slotKeys) return;
    this.live.delete(id);
    if (this.live.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
    const tx = this.opts.redis.multi();
    for (const k of slotKeys) tx.zrem(k, id);
    // Redis away: the entry expires on its own within ttl.
    tx.exec().catch(() => undefined);
  }

  private async refresh(): Promise<void> {
    const entryKeys: string[] = [];
    const ids: string[] = [];
    for (const [id, slotKeys] of this.live) {
      for (const k of slotKeys) {
        entryKeys.push(k);
        ids.push(id);
      }
    }
    if (entryKeys.length === 0) return;
    // Redis away: the entries may expire meanwhile, which only undercounts while nothing can be stored.
    await this.opts.redis
      .eval(REFRESH, entryKeys.length, ...entryKeys, this.ttlMs, ...ids)
      .catch(() => undefined);
  }

  /** Stops refreshing (the process is going): its entries are removed as its associations close. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
