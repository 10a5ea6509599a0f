import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Constant-time comparison of a configured secret with a presented one. Both are hashed first, so
 * neither the content nor the length of the secret leaks through timing.
 */
export function sameSecret(expected: string, given: string): boolean {
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(given).digest();
  return timingSafeEqual(a, b);
}
