// Byte-level edits of top-level elements in an Explicit VR Little Endian Part-10 file, for values no
// tool writes as we need them: text in a legacy character set (Node passes command-line arguments as
// UTF-8, so dcmodify cannot be given Latin-1 or GB18030 bytes), or an odd value length as some vendors
// write. The element must exist already (dcmodify -i inserts it with a placeholder first).
import assert from 'node:assert/strict';
import { checkSequenceDepth, MAX_SEQUENCE_DEPTH } from '../../src/dicom/part10.ts';

/** (gggg,eeee) as the number checkSequenceDepth reports. */
export function tagNumber(group: number, element: number): number {
  return group * 0x10000 + element;
}

/**
 * Replaces the values of top-level elements, rewriting each length field; `pad` (default true) pads an
 * odd-length value to even length with a space, as PS3.5 §7.1.1 requires; false keeps it odd.
 */
export function replaceTopLevelValues(
  file: Buffer,
  values: ReadonlyMap<number, Buffer>,
  opts: { pad?: boolean } = {},
): Buffer {
  const pad = opts.pad ?? true;
  const parts: Buffer[] = [];
  const done = new Set<number>();
  let copied = 0;
  checkSequenceDepth(file, MAX_SEQUENCE_DEPTH, (e) => {
    const bytes = values.get(e.tag);
    if (bytes === undefined) return;
    assert.ok(e.vr !== undefined && e.length !== undefined, 'explicit VR, defined length only');
    const value = pad && bytes.length % 2 === 1 ? Buffer.concat([bytes, Buffer.from(' ')]) : bytes;
    const header = Buffer.from(file.subarray(e.headerStart, e.valueStart));
    if (header.length === 12) header.writeUInt32LE(value.length, 8);
    else header.writeUInt16LE(value.length, 6);
    parts.push(file.subarray(copied, e.headerStart), header, value);
    copied = e.valueStart + e.length;
    done.add(e.tag);
  });
  assert.equal(done.size, values.size, 'every element to replace is in the file, at the top level');
  parts.push(file.subarray(copied));
  return Buffer.concat(parts);
}

/** The value bytes of a top-level element (padding included), or undefined when it is absent. */
export function topLevelValue(file: Buffer, tag: number): Buffer | undefined {
  let found: Buffer | undefined;
  checkSequenceDepth(file, MAX_SEQUENCE_DEPTH, (e) => {
    if (e.tag === tag && e.length !== undefined) found = file.subarray(e.valueStart, e.valueStart + e.length);
  });
  return found;
}
