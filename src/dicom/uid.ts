import { createHash, randomUUID } from 'node:crypto';

// PS3.5 §9.1: digits and dots, no empty components, no leading zeros in a component, at most 64 chars.
const UID_PATTERN = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;

export function isValidUid(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= 64 && UID_PATTERN.test(value);
}

export class InvalidUidError extends Error {
  constructor(
    readonly field: string,
    readonly value: unknown,
  ) {
    super(`${field} is not a valid DICOM UID`);
    this.name = 'InvalidUidError';
  }
}

/** A string UID without the trailing NUL/space padding UI values may carry; non-strings as they are. */
export function trimUid<T>(value: T): T | string {
  return typeof value === 'string' ? value.replace(/[\0 ]+$/, '') : value;
}

/** Returns the UID with trailing NUL/space padding removed, or throws InvalidUidError. */
export function requireUid(field: string, value: unknown): string {
  const trimmed = trimUid(value);
  if (!isValidUid(trimmed)) throw new InvalidUidError(field, value);
  return trimmed;
}

/** A fresh UID under the 2.25 root (PS3.5 §B.2): 128 random bits as one decimal integer. */
export function newUid(): string {
  return hexToUid(randomUUID().replace(/-/g, ''));
}

/** A UID derived from a name, so that retrying the same work yields the same UID. */
export function uidFromName(name: string): string {
  return hexToUid(createHash('sha256').update(name).digest('hex').slice(0, 32));
}

function hexToUid(hex: string): string {
  return `2.25.${BigInt('0x' + hex).toString()}`;
}
