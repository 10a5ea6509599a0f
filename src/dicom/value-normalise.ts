// Values copied from a source image into an object we write (SR, SEG) are made valid for their VR
// (PS3.5 §6.2) or refused. Old scanners and RIS write dotted dates (1997.04.24), times with colons,
// descriptions longer than the VR allows, NUL padding, lower-case code strings: each is rewritten
// into its DICOM form where the meaning is unambiguous; a value that has no DICOM form (a DA 'hello')
// is refused with a reason that names the rule broken, never the value (it may be patient data).
import { isValidUid } from './uid.ts';

export type NormaliseResult =
  /** The value is valid as it is; it is returned untouched (same object, same characters). */
  | { kind: 'kept'; value: unknown }
  /** The value was rewritten into its valid form. */
  | { kind: 'normalised'; value: unknown }
  /** The value has no valid form; `reason` says why without quoting it. */
  | { kind: 'omitted'; reason: string };

export interface NormaliseOptions {
  /**
   * The source's Specific Character Set uses ISO 2022 code extensions (e.g. '\ISO 2022 IR 87'): ESC
   * is part of the text, and an over-long value is refused rather than cut (a cut could split an escape
   * sequence or a two-byte character).
   */
  codeExtensions?: boolean;
  /** The attribute may hold several values (VM > 1); otherwise several values are one value too many. */
  multiple?: boolean;
}

/** Maximum length in characters (PS3.5 Table 6.2-1); PN: per component group. */
export const VR_MAX_CHARS: Readonly<Record<string, number>> = {
  AE: 16,
  AS: 4,
  CS: 16,
  DA: 8,
  DS: 16,
  DT: 26,
  IS: 12,
  LO: 64,
  LT: 10240,
  PN: 64,
  SH: 16,
  ST: 1024,
  TM: 14,
  UI: 64,
};

/** Text VRs: free text in the character set, where the only repair is to cut or clean. */
const TEXT_VRS = new Set(['LO', 'SH', 'LT', 'ST', 'UT', 'UC']);
/** Text VRs that are one paragraph of free text: backslash allowed, CR LF FF TAB allowed. */
const PARAGRAPH_VRS = new Set(['LT', 'ST', 'UT']);

export function normaliseValue(vr: string, value: unknown, opts: NormaliseOptions = {}): NormaliseResult {
  if (value === undefined || value === null) return { kind: 'kept', value };
  if (vr === 'PN') return normalisePersonName(value, opts);
  if (Array.isArray(value)) {
    if (value.length === 0) return { kind: 'kept', value };
    if (value.length === 1) {
      const one = normaliseValue(vr, value[0], opts);
      return one.kind === 'kept' ? { kind: 'kept', value } : one;
    }
    if (!opts.multiple) {
      // Free text split at a backslash is still one text; anything else is a second value.
      if (TEXT_VRS.has(vr) && value.every((v) => typeof v === 'string')) {
        const joined = normaliseValue(vr, value.join(' '), opts);
        return joined.kind === 'kept' ? { kind: 'normalised', value: joined.value } : joined;
      }
      return { kind: 'omitted', reason: `${value.length} values in a single-valued ${vr} attribute` };
    }
    const out: unknown[] = [];
    let changed = false;
    for (const v of value) {
      const r = normaliseValue(vr, v, { ...opts, multiple: false });
      if (r.kind === 'omitted') return r;
      if (r.kind === 'normalised') changed = true;
      out.push(r.value);
    }
    return changed ? { kind: 'normalised', value: out } : { kind: 'kept', value };
  }
  const single = normaliseSingle(vr, value, opts);
  if (single.kind !== 'omitted' && single.value === value) return { kind: 'kept', value };
  return single;
}

function result(original: unknown, value: unknown): NormaliseResult {
  return value === original ? { kind: 'kept', value } : { kind: 'normalised', value };
}

function omitted(reason: string): NormaliseResult {
  return { kind: 'omitted', reason };
}

function normaliseSingle(vr: string, value: unknown, opts: NormaliseOptions): NormaliseResult {
  if (vr === 'DS') return normaliseDecimal(value);
  if (vr === 'IS') return normaliseInteger(value);
  if (typeof value !== 'string') return omitted(`a ${vr} value that is not text`);
  switch (vr) {
    case 'DA':
      return normaliseDate(value);
    case 'TM':
      return normaliseTime(value);
    case 'DT':
      return normaliseDateTime(value);
    case 'CS':
      return normaliseCodeString(value);
    case 'AE':
      return result(value, cutChars(cleanText(value, { controls: 'none', backslash: false }).trim(), 16));
    case 'AS': {
      const s = stripPadding(value).toUpperCase();
      return /^\d{3}[DWMY]$/.test(s) ? result(value, s) : omitted('not an age string (nnnD/W/M/Y)');
    }
    case 'UI': {
      const s = value.replace(/[\0 ]+$/g, '').replace(/^[\0 ]+/, '');
      return isValidUid(s) ? result(value, s) : omitted('not a valid UID');
    }
    default:
      if (TEXT_VRS.has(vr)) return normaliseText(vr, value, opts);
      return omitted(`VR ${vr} is not copied`);
  }
}

/** Trailing (and leading) spaces and NULs: padding, never part of the value for these VRs. */
function stripPadding(s: string): string {
  return s.replace(/^[\0 ]+|[\0 ]+$/g, '');
}

/** Code points, so that a cut never splits a surrogate pair. */
function cutChars(s: string, max: number): string {
  const chars = Array.from(s);
  return chars.length <= max ? s : chars.slice(0, max).join('');
}

function charCount(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * Removes NULs; control characters (C0 and C1, DEL) become spaces except those `controls` allows: ESC
 * under ISO 2022 code extensions, and TAB/LF/FF/CR in paragraph text. Backslash becomes a space where
 * it would split the value.
 */
function cleanText(
  s: string,
  o: { controls: 'none' | 'escape' | 'paragraph' | 'paragraph+escape'; backslash: boolean },
): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c === 0) continue;
    const control = c < 0x20 || (c >= 0x7f && c <= 0x9f);
    if (control) {
      const esc = c === 0x1b && (o.controls === 'escape' || o.controls === 'paragraph+escape');
      const para =
        (c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d) &&
        (o.controls === 'paragraph' || o.controls === 'paragraph+escape');
      out += esc || para ? ch : ' ';
    } else if (c === 0x5c && !o.backslash) out += ' ';
    else out += ch;
  }
  return out;
}

function normaliseText(vr: string, value: string, opts: NormaliseOptions): NormaliseResult {
  const paragraph = PARAGRAPH_VRS.has(vr);
  const controls = paragraph
    ? opts.codeExtensions
      ? 'paragraph+escape'
      : 'paragraph'
    : opts.codeExtensions
      ? 'escape'
      : 'none';
  let s = cleanText(value, { controls, backslash: paragraph });
  // Leading spaces are significant in paragraph text, trailing ones in none of these.
  s = paragraph ? s.replace(/ +$/, '') : s.trim();
  const max = VR_MAX_CHARS[vr];
  if (max !== undefined && charCount(s) > max) {
    if (opts.codeExtensions) return omitted(`longer than ${vr}'s ${max} characters, in ISO 2022 text`);
    s = cutChars(s, max).replace(paragraph ? / +$/ : /\s+$/, '');
  }
  return result(value, s);
}

const PN_GROUPS = ['Alphabetic', 'Ideographic', 'Phonetic'] as const;

/** One component group of a person name: LO-like text without '=' or backslash. */
function normaliseNameGroup(s: string, opts: NormaliseOptions): string | { reason: string } {
  let out = cleanText(s, { controls: opts.codeExtensions ? 'escape' : 'none', backslash: false });
  out = out.replace(/=/g, ' ').replace(/ +$/, '').replace(/^ +/, '');
  if (charCount(out) > 64) {
    if (opts.codeExtensions)
      return { reason: 'a PN component group longer than 64 characters, in ISO 2022 text' };
    out = cutChars(out, 64).replace(/ +$/, '');
  }
  return out;
}

/**
 * Person Name, as dcmjs gives it (an array of {Alphabetic, Ideographic, Phonetic}, or a string with
 * '=' between the groups). Only what breaks the VR is touched, so a valid name keeps its characters.
 */
function normalisePersonName(value: unknown, opts: NormaliseOptions): NormaliseResult {
  if (typeof value === 'string') {
    const groups = value.split('=');
    if (groups.length > 3) return omitted('a PN value with more than three component groups');
    const out: string[] = [];
    for (const g of groups) {
      const r = normaliseNameGroup(g, opts);
      if (typeof r !== 'string') return omitted(r.reason);
      out.push(r);
    }
    return result(value, out.join('=') === value ? value : out.join('=').replace(/=+$/, ''));
  }
  const items = Array.isArray(value) ? value : [value];
  if (items.length > 1 && !opts.multiple)
    return omitted(`${items.length} values in a single-valued PN attribute`);
  let changed = false;
  const out: Record<string, string>[] = [];
  for (const item of items) {
    if (typeof item === 'string') {
      const r = normalisePersonName(item, { ...opts, multiple: false });
      if (r.kind === 'omitted') return r;
      if (r.kind === 'normalised') changed = true;
      out.push({ Alphabetic: r.value as string });
      continue;
    }
    if (!item || typeof item !== 'object') return omitted('a PN value that is not a name');
    const groups: Record<string, string> = {};
    for (const key of PN_GROUPS) {
      const g = (item as Record<string, unknown>)[key];
      if (g === undefined) continue;
      if (typeof g !== 'string') return omitted('a PN component group that is not text');
      const r = normaliseNameGroup(g, opts);
      if (typeof r !== 'string') return omitted(r.reason);
      if (r !== g) changed = true;
      groups[key] = r;
    }
    out.push(groups);
  }
  return changed
    ? { kind: 'normalised', value: Array.isArray(value) ? out : out[0] }
    : { kind: 'kept', value };
}

function normaliseCodeString(value: string): NormaliseResult {
  const s = stripPadding(value)
    .toUpperCase()
    .replace(/[^A-Z0-9 _]/g, '_');
  return result(value, cutChars(s, 16).replace(/ +$/, ''));
}

function validDate(y: number, m: number, d: number): boolean {
  if (y < 1 || m < 1 || m > 12 || d < 1) return false;
  const days = [
    31,
    (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28,
    31,
    30,
    31,
    30,
    31,
    31,
    30,
    31,
    30,
    31,
  ];
  return d <= days[m - 1]!;
}

const p2 = (s: string) => s.padStart(2, '0');

/** DA: YYYYMMDD; also the ACR-NEMA / ISO forms YYYY.MM.DD, YYYY-MM-DD, YYYY/MM/DD. */
function normaliseDate(value: string): NormaliseResult {
  const s = stripPadding(value);
  if (s === '') return result(value, '');
  const m = /^(\d{4})(?:(\d{2})(\d{2})|([.\-/])(\d{1,2})\4(\d{1,2}))$/.exec(s);
  if (!m) return omitted('not a date (DA is YYYYMMDD)');
  const [y, mo, d] = m[2] ? [m[1]!, m[2], m[3]!] : [m[1]!, p2(m[5]!), p2(m[6]!)];
  if (!validDate(Number(y), Number(mo), Number(d))) return omitted('not a calendar date');
  return result(value, `${y}${mo}${d}`);
}

function timeParts(
  hh: string,
  mm: string | undefined,
  ss: string | undefined,
  frac: string | undefined,
): string | undefined {
  if (Number(hh) > 23) return undefined;
  if (mm !== undefined && Number(mm) > 59) return undefined;
  if (ss !== undefined && Number(ss) > 60) return undefined;
  if (frac !== undefined && ss === undefined) return undefined;
  return `${hh}${mm ?? ''}${ss ?? ''}${frac !== undefined ? `.${frac.slice(0, 6)}` : ''}`;
}

/** TM: HH[MM[SS[.FFFFFF]]]; also HH:MM:SS(.,)F… as older equipment and ISO 8601 write it. */
function normaliseTime(value: string): NormaliseResult {
  const s = stripPadding(value);
  if (s === '') return result(value, '');
  const m =
    /^(\d{2})(?:(\d{2})(?:(\d{2})(?:[.,](\d+))?)?)?$/.exec(s) ??
    /^(\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?$/.exec(s);
  const t = m && timeParts(m[1]!, m[2], m[3], m[4]);
  return t ? result(value, t) : omitted('not a time (TM is HHMMSS.FFFFFF)');
}

/** DT: YYYYMMDDHHMMSS.FFFFFF&ZZXX, also with ISO 8601 separators (2024-05-17T13:45:30.5+02:00). */
function normaliseDateTime(value: string): NormaliseResult {
  const s = stripPadding(value);
  if (s === '') return result(value, '');
  const m =
    /^(\d{4})(?:[-./]?(\d{2})(?:[-./]?(\d{2})(?:[T ]?(\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d+))?)?)?)?)?)?(?:([+-])(\d{2}):?(\d{2})|Z)?$/.exec(
      s,
    );
  if (!m) return omitted('not a date-time (DT is YYYYMMDDHHMMSS.FFFFFF&ZZXX)');
  const [, y, mo, d, hh, mi, ss, frac, sign, oh, om] = m;
  if (mo !== undefined && (Number(mo) < 1 || Number(mo) > 12)) return omitted('not a calendar date');
  if (d !== undefined && !validDate(Number(y), Number(mo), Number(d))) return omitted('not a calendar date');
  let out = `${y}${mo ?? ''}${d ?? ''}`;
  if (hh !== undefined) {
    const t = timeParts(hh, mi, ss, frac);
    if (!t) return omitted('not a date-time (DT is YYYYMMDDHHMMSS.FFFFFF&ZZXX)');
    out += t;
  }
  if (sign) {
    if (Number(oh) > 14 || Number(om) > 59) return omitted('not a UTC offset (&ZZXX)');
    out += `${sign}${oh}${om}`;
  } else if (s.endsWith('Z')) out += '+0000';
  return result(value, out);
}

/** DS: at most 16 characters of a decimal number. */
function normaliseDecimal(value: unknown): NormaliseResult {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return omitted('not a finite number (DS)');
    return result(value, String(value).length <= 16 ? value : decimalString(value));
  }
  if (typeof value !== 'string') return omitted('a DS value that is not a number');
  const s = stripPadding(value);
  if (s === '') return result(value, '');
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) return omitted('not a decimal string (DS)');
  const n = Number(s);
  if (!Number.isFinite(n)) return omitted('not a finite number (DS)');
  return result(value, s.length <= 16 ? s : decimalString(n));
}

/** A finite number in at most 16 characters, keeping as many significant digits as fit. */
export function decimalString(n: number): string {
  for (let precision = 15; precision >= 1; precision--) {
    const s = String(Number(n.toPrecision(precision)));
    if (s.length <= 16) return s;
  }
  return n.toExponential(0);
}

/** IS: a 32-bit signed integer, at most 12 characters. */
function normaliseInteger(value: unknown): NormaliseResult {
  const s =
    typeof value === 'number' ? String(value) : typeof value === 'string' ? stripPadding(value) : undefined;
  if (s === undefined) return omitted('an IS value that is not a number');
  if (s === '') return result(value, '');
  if (!/^[+-]?\d+(\.0*)?$/.test(s)) return omitted('not an integer string (IS)');
  const n = Number.parseInt(s, 10);
  if (n < -(2 ** 31) || n > 2 ** 31 - 1) return omitted('an integer outside the IS range');
  if (typeof value === 'number') return result(value, value);
  return result(value, /^[+-]?\d+$/.test(s) && s.length <= 12 ? s : String(n));
}
