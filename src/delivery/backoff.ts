// Retry timing of the delivery queue: exponential from the configured base, capped so that the
// configured number of attempts spans hours rather than doubling into days, and never sooner than
// a server's Retry-After.
import type { BackoffStrategy } from 'bullmq';
import { TransientDeliveryError } from './destination.ts';

export interface BackoffSettings {
  baseMs: number;
  maxMs: number;
}

/** The longest wait a server's Retry-After can impose on one retry. */
export const MAX_SERVER_DELAY_MS = 3_600_000;

/** Delay before retry number `attemptsMade` (1 = after the first failure). */
export function deliveryDelay(attemptsMade: number, s: BackoffSettings, retryAfterMs?: number): number {
  const exp = s.baseMs * 2 ** Math.max(0, Math.min(attemptsMade - 1, 40));
  const delay = Math.min(exp, s.maxMs);
  // The server knows best when it will be back, within reason: at most an hour, whoever parsed it.
  return retryAfterMs !== undefined ? Math.max(delay, Math.min(retryAfterMs, MAX_SERVER_DELAY_MS)) : delay;
}

/** Sum of the delays over `attempts` attempts: how long a destination may be down without loss. */
export function retryWindowMs(attempts: number, s: BackoffSettings): number {
  let total = 0;
  for (let a = 1; a < attempts; a++) total += deliveryDelay(a, s);
  return total;
}

export function deliveryBackoffStrategy(s: BackoffSettings): BackoffStrategy {
  return (attemptsMade, type, err) => {
    // Other types (jobs queued by an older version) fall back to the same capped curve.
    void type;
    const retryAfter = err instanceof TransientDeliveryError ? err.retryAfterMs : undefined;
    return deliveryDelay(attemptsMade, s, retryAfter);
  };
}
