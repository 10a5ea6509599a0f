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

/** Compared when there is nothing to compare with, so an empty list costs what a one-entry list does. */
const DUMMY_SECRET = 'no-such-credential';

/**
 * The entry whose name and secret both match the presented ones, or undefined. Every entry's name AND
 * secret are compared whatever matched (no early exit, no skipped password for an unknown name), so the
 * time taken tells neither whether the name exists nor which entry it is.
 */
export function findCredential<T>(
  entries: readonly T[],
  name: string,
  secret: string,
  nameOf: (entry: T) => string,
  secretOf: (entry: T) => string,
): T | undefined {
  let found: T | undefined;
  for (const entry of entries) {
    const nameOk = sameSecret(nameOf(entry), name);
    const secretOk = sameSecret(secretOf(entry), secret);
    if (nameOk && secretOk && found === undefined) found = entry;
  }
  if (entries.length === 0) sameSecret(DUMMY_SECRET, secret);
  return found;
}
