// The maintenance lease: with several gateways sharing one Redis and one store, cluster-wide maintenance
// (retention, the periodic spool reconcile, the stale temp sweep, dead-worker pruning) runs on one gateway
// at a time, the holder of a Redis lease with expiry.
//
// - Acquire: SET <key> <instance id> NX PX ttl (in a script that also re-adopts a key still holding our own
//   id). Tried every ttl/3 by every gateway that does not hold it, and at once when Redis answers again.
// - Renew: every ttl/3, a Lua compare-and-pexpire (only the holder's own token is extended).
// - Release (clean stop): a Lua compare-and-del, so the next gateway takes over at its next try, not after
//   the expiry.
// - Lost: a renewal that finds another token, that fails (Redis away), or that does not come back before the
//   lease may have expired on Redis: maintenance stops here at once. Another gateway takes over once the key
//   expires. The local deadline is measured from when the last successful renewal was SENT, so the local view
//   always ends before Redis's (a PX counts from when Redis applied it, later).
// Work started by a holder checks `signal` (aborted the moment the lease is lost) between its steps.
import type { Redis } from 'ioredis';
import { maintenanceLeaseHeld } from '../observability/metrics.ts';
import { pipelineEvents } from './events.ts';
import { keys } from './keys.ts';
import { NODE_ID } from './node-id.ts';

// KEYS[1] the lease; ARGV: token, ttl ms. SET NX PX, or re-adopts a lease still holding our own token (we gave
// it up locally after a failed renewal, but nobody else can have held it since). 1 when ours now.
const ACQUIRE = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`;

// KEYS[1] the lease; ARGV: token, ttl ms. 1 when still ours (extended), 0 otherwise.
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`;

// KEYS[1] the lease; ARGV: token. 1 when it was ours and is gone, 0 otherwise.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

/** What a holder runs: started on acquiring; `signal` aborts when the lease is lost or released. */
export type MaintenanceStart = (signal: AbortSignal) => () => Promise<void> | void;

export interface MaintenanceLeaseOptions {
  /** A fail-fast connection (createIngestRedis): during an outage a renewal fails at once, not later. */
  redis: Redis;
  prefix: string;
  ttlMs: number;
  /** This process's instance id (NODE_ID unless a test runs several in one process). */
  id?: string;
  /** Starts the maintenance; returns its stop, called when the lease is lost, released or stopped. */
  onAcquired: MaintenanceStart;
}

export interface LeaseHolder {
  /** The holder's instance id, or null when no gateway holds it now. */
  holder: string | null;
  /** Whether this process is the holder. */
  self: boolean;
  /** Milliseconds until the lease expires on Redis unless renewed (null without a holder). */
  expiresInMs: number | null;
}

export class MaintenanceLease {
  readonly id: string;
  private held = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private abort: AbortController | undefined;
  private stopMaintenance: (() => Promise<void> | void) | undefined;
  private stopping: Promise<void> = Promise.resolve();

  constructor(private readonly opts: MaintenanceLeaseOptions) {
    if (!Number.isInteger(opts.ttlMs) || opts.ttlMs < 300)
      throw new Error(`invalid lease ttl: ${opts.ttlMs}`);
    this.id = opts.id ?? NODE_ID;
  }

  private get key(): string {
    return keys.maintenanceLease(this.opts.prefix);
  }

  /** Whether this process holds the lease (its local view, which ends before Redis's). */
  get isHeld(): boolean {
    return this.held;
  }

  /** Tries at once, then renews or retries every ttl/3, and as soon as Redis answers again after an outage. */
  start(): void {
    this.opts.redis.on('ready', this.onReady);
    this.tick();
    this.timer = setInterval(() => this.tick(), Math.max(100, Math.floor(this.opts.ttlMs / 3)));
    this.timer.unref();
  }

  private readonly onReady = (): void => this.tick();

  /** One try, or one renewal; a tick while the previous one is out is skipped. */
  private tick(): void {
    if (this.stopped || this.running) return;
    this.running = (this.held ? this.renew() : this.acquire()).finally(() => {
      this.running = undefined;
    });
  }

  private async acquire(): Promise<void> {
    const sentAt = Date.now();
    let ok: boolean;
    try {
      ok = Number(await this.opts.redis.eval(ACQUIRE, 1, this.key, this.id, this.opts.ttlMs)) === 1;
    } catch {
      return; // Redis away: nobody can hold it; the next tick (or Redis's return) tries again
    }
    if (!ok || this.stopped) {
      if (ok) await this.release();
      return;
    }
    this.held = true;
    this.armDeadline(sentAt);
    maintenanceLeaseHeld.set(1);
    pipelineEvents.leaseAcquired(this.id, this.opts.ttlMs);
    this.abort = new AbortController();
    try {
      this.stopMaintenance = this.opts.onAcquired(this.abort.signal);
    } catch (err) {
      pipelineEvents.maintenanceStepFailed('start', err);
    }
  }

  private async renew(): Promise<void> {
    const sentAt = Date.now();
    let ours: unknown;
    try {
      ours = await this.opts.redis.eval(RENEW, 1, this.key, this.id, this.opts.ttlMs);
    } catch (err) {
      this.lose(`renewal failed: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    if (!this.held) return; // the deadline passed while the renewal was out
    if (Number(ours) !== 1) {
      this.lose('another gateway holds it (ours had expired)');
      return;
    }
    this.armDeadline(sentAt);
  }

  /** Gives the lease up locally if no renewal lands before it may have expired on Redis. */
  private armDeadline(sentAt: number): void {
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = setTimeout(
      () => this.lose('not renewed before it expired'),
      Math.max(0, sentAt + this.opts.ttlMs - Date.now()),
    );
    this.deadline.unref();
  }

  /** Stops the maintenance at once (its signal aborts; its stop runs in the background). */
  private lose(reason: string): void {
    if (!this.held) return;
    this.dropHeld();
    pipelineEvents.leaseLost(this.id, reason);
  }

  private dropHeld(): void {
    this.held = false;
    maintenanceLeaseHeld.set(0);
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = undefined;
    this.abort?.abort();
    this.abort = undefined;
    const stop = this.stopMaintenance;
    this.stopMaintenance = undefined;
    if (stop) {
      this.stopping = this.stopping.then(async () => {
        try {
          await stop();
        } catch (err) {
          pipelineEvents.maintenanceStepFailed('stop', err);
        }
      });
    }
  }

  private async release(): Promise<void> {
    try {
      const gone = await this.opts.redis.eval(RELEASE, 1, this.key, this.id);
      if (Number(gone) === 1) pipelineEvents.leaseReleased(this.id);
    } catch {
      // Redis away: the lease expires on its own
    }
  }

  /** Stops trying; when held, stops the maintenance, then releases the lease (another takes over at once). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.opts.redis.off('ready', this.onReady);
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
    const wasHeld = this.held;
    if (wasHeld) this.dropHeld();
    await this.stopping;
    if (wasHeld) await this.release();
  }

  /** Who holds the lease now, read from Redis. */
  async holder(): Promise<LeaseHolder> {
    const [[, holder], [, pttl]] = ((await this.opts.redis.multi().get(this.key).pttl(this.key).exec()) ?? [
      [null, null],
      [null, -2],
    ]) as [[unknown, string | null], [unknown, number]];
    return {
      holder: holder ?? null,
      self: holder === this.id && this.held,
      expiresInMs: holder !== null && holder !== undefined && pttl >= 0 ? pttl : null,
    };
  }
}
