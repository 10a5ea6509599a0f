// First values of data elements read straight from their bytes, formatted exactly as the header read through
// dcmjs (part10.ts) gives them: the fast path of readInstanceHeader for the attributes ingest needs. Only
// plain 7-bit ASCII without ESC is read here (the caller checks with isPlainAscii): those bytes mean the same
// in every character set a data set may declare, so no decoder is needed; anything else is for dcmjs to
// decode. The readers give undefined for an empty value, as the dcmjs path does.

/** Longest string kept from a header value. */
export const MAX_STRING_LENGTH = 1024;

const BACKSLASH = '\\';

/** A header string as the rest of the gateway sees it: padding and spaces cut, at most MAX_STRING_LENGTH. */
export function cleanText(v: string): string | undefined {
  const trimmed = v.replace(/[\0 ]+$/, '').trim();
  return trimmed.length > 0 ? trimmed.slice(0, MAX_STRING_LENGTH) : undefined;
}

/** Bytes [start, end) are 7-bit ASCII without ESC (0x1b, which opens an ISO 2022 escape sequence). */
export function isPlainAscii(b: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = b[i]!;
    if (c > 0x7f || c === 0x1b) return false;
  }
  return true;
}

/** The first of the backslash-separated values of a string. */
function firstOf(text: string): string {
  const cut = text.indexOf(BACKSLASH);
  return cut < 0 ? text : text.slice(0, cut);
}

/** A text VR (CS, LO, SH): the first value of a multi-valued string. */
export function firstText(b: Buffer, start: number, end: number): string | undefined {
  return cleanText(firstOf(b.toString('latin1', start, end)));
}

/** A UI value's text as dcmjs reads it, before splitting it into values: one trailing NUL pad dropped. */
export function uidText(b: Buffer, start: number, end: number): string {
  const padded = end > start && b[end - 1] === 0x00;
  return b.toString('latin1', start, padded ? end - 1 : end);
}

/** dcmjs's formatting of one UI value: every character but digits and dots dropped. */
export function uidCharacters(value: string): string {
  return value.replace(/[^0-9.]/g, '');
}

/** UI: the first value, formatted as dcmjs formats it. */
export function firstUid(b: Buffer, start: number, end: number): string | undefined {
  return cleanText(uidCharacters(firstOf(uidText(b, start, end))));
}

/** PN: the alphabetic group of the first non-empty value. */
export function firstPersonName(b: Buffer, start: number, end: number): string | undefined {
  const first = b
    .toString('latin1', start, end)
    .split(BACKSLASH)
    .find((v) => v.length > 0);
  const alphabetic = first?.split('=')[0];
  return alphabetic === undefined || alphabetic === '' ? undefined : cleanText(alphabetic);
}

/** IS: the first value with dcmjs's cleaning (anything but digits, signs, dots and exponents dropped). */
export function firstIntegerString(b: Buffer, start: number, end: number): number | undefined {
  const cleaned = firstOf(b.toString('latin1', start, end))
    .trim()
    .replace(/[^0-9.\\\-+e]/gi, '');
  if (cleaned === '') return undefined;
  const n = Number(cleaned);
  return Number.isFinite(n) ? n : undefined;
}

/** US, little endian: the first value; undefined when the length is not a whole number of values. */
export function firstUnsignedShort(b: Buffer, start: number, end: number): number | undefined {
  const length = end - start;
  return length >= 2 && length % 2 === 0 ? b.readUInt16LE(start) : undefined;
}
