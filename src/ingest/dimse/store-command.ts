// A C-STORE-RQ command set, read by hand. dcmjs-dimse reads every command through dcmjs's generic data set
// reader (a stream object, a tag dictionary, naturalizing), copies it out of a memory stream, and builds its
// log line before it knows whether anyone logs: about 0.45 ms per instance on the 2-core VM of
// docs/benchmarks.md, on the path between one instance's Success and the next one's first byte. Only the
// plain C-STORE-RQ shape is read here (PS3.7 9.3.1.1, the command set in implicit VR little endian: PS3.7
// 6.3.1); anything else gives undefined and goes to the library as before. The values come out exactly as
// the library's reader gives them (dcmjs 0.x value formatting), so the rest of the association cannot tell
// the difference: tests/unit/ingest/store-command.test.ts compares the two.

import { uidCharacters, uidText } from '../../dicom/plain-values.ts';

/** The command elements of a C-STORE-RQ by the keywords dcmjs-dimse's Dataset uses for them. */
export interface StoreCommandElements {
  CommandGroupLength: number;
  AffectedSOPClassUID: string;
  CommandField: number;
  MessageID: number;
  Priority: number;
  CommandDataSetType: number;
  AffectedSOPInstanceUID: string;
  MoveOriginatorApplicationEntityTitle?: string;
  MoveOriginatorMessageID?: number;
}

type Vr = 'UL' | 'US' | 'UI' | 'AE';

/** The elements a C-STORE-RQ may carry (PS3.7 Table 9.3-1), by element number in group 0000. */
const ELEMENTS = new Map<number, { keyword: keyof StoreCommandElements; vr: Vr }>([
  [0x0000, { keyword: 'CommandGroupLength', vr: 'UL' }],
  [0x0002, { keyword: 'AffectedSOPClassUID', vr: 'UI' }],
  [0x0100, { keyword: 'CommandField', vr: 'US' }],
  [0x0110, { keyword: 'MessageID', vr: 'US' }],
  [0x0700, { keyword: 'Priority', vr: 'US' }],
  [0x0800, { keyword: 'CommandDataSetType', vr: 'US' }],
  [0x1000, { keyword: 'AffectedSOPInstanceUID', vr: 'UI' }],
  [0x1030, { keyword: 'MoveOriginatorApplicationEntityTitle', vr: 'AE' }],
  [0x1031, { keyword: 'MoveOriginatorMessageID', vr: 'US' }],
]);

const REQUIRED: (keyof StoreCommandElements)[] = [
  'CommandGroupLength',
  'AffectedSOPClassUID',
  'CommandField',
  'MessageID',
  'Priority',
  'CommandDataSetType',
  'AffectedSOPInstanceUID',
];

const C_STORE_RQ = 0x0001;
/** Command Data Set Type (0000,0800) meaning "no data set follows". */
const NO_DATA_SET = 0x0101;
/** A command set is a few hundred bytes; anything much larger is not the plain shape read here. */
const MAX_COMMAND_BYTES = 4096;

/**
 * The elements of a C-STORE-RQ command set that announces a data set, or undefined when the bytes are
 * anything else: another command, an element this reader does not know, a multi-valued string, an element
 * out of order or cut short. Undefined never means "invalid" here, only "let the library read it".
 */
export function readStoreCommand(bytes: Buffer): StoreCommandElements | undefined {
  if (bytes.length > MAX_COMMAND_BYTES) return undefined;
  const out: Partial<Record<keyof StoreCommandElements, string | number>> = {};
  let previous = -1;
  let pos = 0;
  while (pos < bytes.length) {
    if (pos + 8 > bytes.length) return undefined;
    if (bytes.readUInt16LE(pos) !== 0x0000) return undefined;
    const elementNumber = bytes.readUInt16LE(pos + 2);
    const length = bytes.readUInt32LE(pos + 4);
    const start = pos + 8;
    const end = start + length;
    if (end > bytes.length || elementNumber <= previous) return undefined;
    const known = ELEMENTS.get(elementNumber);
    if (known === undefined) return undefined;
    const value = decode(known.vr, bytes, start, end);
    if (value === undefined) return undefined;
    out[known.keyword] = value;
    previous = elementNumber;
    pos = end;
  }
  if (REQUIRED.some((k) => out[k] === undefined)) return undefined;
  const elements = out as unknown as StoreCommandElements;
  if (elements.CommandField !== C_STORE_RQ || elements.CommandDataSetType === NO_DATA_SET) return undefined;
  return elements;
}

/**
 * The elements as dcmjs-dimse's Dataset holds them after its own read: dcmjs's naturalized form, which
 * carries a `_vrMap` (empty here: no element of a command set has an ambiguous VR).
 */
export function asLibraryElements(elements: StoreCommandElements): Record<string, unknown> {
  return { ...elements, _vrMap: {} };
}

/** One value as dcmjs formats it for its VR; undefined for a shape dcmjs would read differently. */
function decode(vr: Vr, bytes: Buffer, start: number, end: number): string | number | undefined {
  const length = end - start;
  switch (vr) {
    case 'UL':
      return length === 4 ? bytes.readUInt32LE(start) : undefined;
    case 'US':
      return length === 2 ? bytes.readUInt16LE(start) : undefined;
    case 'UI': {
      const text = uidText(bytes, start, end);
      const uid = uidCharacters(text);
      return text.includes('\\') || uid === '' ? undefined : uid;
    }
    case 'AE': {
      const text = bytes.toString('latin1', start, end);
      const ae = text.trim();
      return text.includes('\\') || ae === '' ? undefined : ae;
    }
  }
}
