// Per-destination circuit breaker, kept in Redis (keys.destinations) so that every gateway sharing the
// Redis sees one state per destination, and the dashboard reads the same record (DestinationStatus).
// closed → open after `threshold` consecutive transient failures; open → half-open after `cooldownMs`,
// when exactly one delivery (holder of the probe key) may try; its success closes the breaker, its
// failure opens it for another cool-down. Each transition is one Lua script, so concurrent deliveries
// from several processes cannot lose an update.
import type { Redis } from 'ioredis';
import { keys, type DestinationStatus } from '../pipeline/keys.ts';

export type Outcome = 'success' | 'transient' | 'permanent';

/** What the breaker says about one delivery attempt. */
export type Gate = { pass: true; probe: boolean } | { pass: false; retryAt: number };

const GATE = `
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local s = cjson.decode(raw)
if s.breaker == 'closed' then return 0 end
local now = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
local openedAt = tonumber(s.openedAt) or 0
if s.breaker == 'open' and now < openedAt + cooldown then return openedAt + cooldown end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', cooldown) then
  s.breaker = 'half-open'
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(s))
  return -1
end
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 then ttl = cooldown end
return now + ttl
`;

const RECORD = `
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local s
if raw then s = cjson.decode(raw) else s = { name = ARGV[1], breaker = 'closed', consecutiveFailures = 0 } end
s.kind = ARGV[2]
local now = tonumber(ARGV[4])
if ARGV[3] == 'success' then
  s.breaker = 'closed'
  s.consecutiveFailures = 0
  s.lastSuccessAt = now
  s.openedAt = nil
  redis.call('DEL', KEYS[2])
elseif ARGV[3] == 'transient' then
  s.consecutiveFailures = (tonumber(s.consecutiveFailures) or 0) + 1
  s.lastErrorAt = now
  s.lastError = ARGV[6]
  if s.breaker == 'half-open' or s.consecutiveFailures >= tonumber(ARGV[5]) then
    if s.breaker ~= 'open' then s.openedAt = now end
    s.breaker = 'open'
    redis.call('DEL', KEYS[2])
  end
else
  -- The destination answered (and refused this object): it is up, whatever the object's fate.
  s.lastErrorAt = now
  s.lastError = ARGV[6]
  s.consecutiveFailures = 0
  if s.breaker ~= 'closed' then
    s.breaker = 'closed'
    s.openedAt = nil
    redis.call('DEL', KEYS[2])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(s))
return s.breaker
`;

export interface BreakerSettings {
  /** Consecutive transient failures that open the breaker. */
  threshold: number;
  /** How long it stays open before one probe may pass. */
  cooldownMs: number;
}

export class DestinationBreakers {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly settings: BreakerSettings,
    private readonly now: () => number = Date.now,
  ) {}

  async gate(destination: string): Promise<Gate> {
    const r = Number(
      await this.redis.eval(
        GATE,
        2,
        keys.destinations(this.prefix),
        keys.breakerProbe(this.prefix, destination),
        destination,
        String(this.now()),
        String(this.settings.cooldownMs),
      ),
    );
    if (r === 0) return { pass: true, probe: false };
    if (r === -1) return { pass: true, probe: true };
    return { pass: false, retryAt: r };
  }

  /** Records an attempt's outcome and returns the breaker state after it. */
  async record(
    destination: string,
    kind: string,
    outcome: Outcome,
    error = '',
  ): Promise<DestinationStatus['breaker']> {
    return (await this.redis.eval(
      RECORD,
      2,
      keys.destinations(this.prefix),
      keys.breakerProbe(this.prefix, destination),
      destination,
      kind,
      outcome,
      String(this.now()),
      String(this.settings.threshold),
      error.slice(0, 500),
    )) as DestinationStatus['breaker'];
  }

  /** Each named destination and whether its breaker holds deliveries back (open or half-open). */
  async openStates(destinations: string[]): Promise<{ destination: string; open: boolean }[]> {
    const raw = destinations.length
      ? await this.redis.hmget(keys.destinations(this.prefix), ...destinations)
      : [];
    return destinations.map((destination, i) => {
      let breaker: string | undefined;
      try {
        breaker = raw[i] ? (JSON.parse(raw[i]!) as Partial<DestinationStatus>).breaker : undefined;
      } catch {
        breaker = undefined; // a malformed entry reads as closed
      }
      return { destination, open: breaker === 'open' || breaker === 'half-open' };
    });
  }

  async status(destination: string): Promise<DestinationStatus | undefined> {
    const raw = await this.redis.hget(keys.destinations(this.prefix), destination);
    return raw ? (JSON.parse(raw) as DestinationStatus) : undefined;
  }
}
