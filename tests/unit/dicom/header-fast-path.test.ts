// readInstanceHeader's fast path (instanceHeaderFromTopLevel, no dcmjs) against its dcmjs path: on every
// sample of ../shared/dicom-samples, from the 64 KiB head ingest keeps and from the whole file, the fast path
// either declines (undefined) or gives exactly the dcmjs result; and on values vendors write oddly (derived
// from a real CT slice with raw byte edits), the same. It must also be taken where it should, or it gains
// nothing: every slice of the CT and MR series, uncompressed or not.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  instanceHeaderFromTopLevel,
  readInstanceHeader,
  type ByteSource,
  type InstanceHeader,
} from '../../../src/dicom/part10.ts';
import { replaceTopLevelValues, tagNumber } from '../../helpers/raw-elements.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const SAMPLES = path.resolve(here, '../../../../shared/dicom-samples');
const HEAD_BYTES = 64 * 1024;

async function sampleFiles(dir = SAMPLES): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sampleFiles(p)));
    else if (e.name.endsWith('.dcm')) out.push(p);
  }
  return out.sort();
}

function source(bytes: Buffer): ByteSource {
  return { size: bytes.length, read: async (o, l) => bytes.subarray(o, o + l) };
}

/** The dcmjs path (no prefix given: the fast path is not tried), or the error it throws. */
async function viaDcmjs(bytes: Buffer): Promise<InstanceHeader | Error> {
  return readInstanceHeader(source(bytes)).catch((err: unknown) => err as Error);
}

/** Both paths on one object: equal where the fast one answers; returns whether it did. */
async function agree(bytes: Buffer, name: string): Promise<boolean> {
  const expected = await viaDcmjs(bytes);
  let fast = false;
  for (const prefix of [bytes.subarray(0, HEAD_BYTES), bytes]) {
    const got = instanceHeaderFromTopLevel(prefix, bytes.length);
    if (got === undefined) continue;
    fast = true;
    assert.ok(
      !(expected instanceof Error),
      `${name}: fast path read what dcmjs refuses (${String(expected)})`,
    );
    assert.deepStrictEqual(got, expected, `${name} (${prefix.length} of ${bytes.length} bytes)`);
  }
  // And through the public door, as ingest calls it.
  const viaPrefix = await readInstanceHeader(source(bytes), {
    prefix: { bytes: bytes.subarray(0, HEAD_BYTES), fileSize: bytes.length },
  }).catch((err: unknown) => err as Error);
  if (expected instanceof Error) assert.ok(viaPrefix instanceof Error, `${name}: refused both ways`);
  else assert.deepStrictEqual(viaPrefix, expected, `${name}: readInstanceHeader with a prefix`);
  return fast;
}

test('on every sample the fast path gives the dcmjs result, or declines', async () => {
  const files = await sampleFiles();
  assert.ok(files.length >= 100, `samples found: ${files.length}`);
  const taken: string[] = [];
  for (const file of files) {
    const rel = path.relative(SAMPLES, file);
    if (await agree(await readFile(file), rel)) taken.push(rel);
  }
  // Taken for every slice of the uncompressed CT and MR series, and for the compressed CT slice too.
  for (const family of ['ct-series/', 'mr/']) {
    const all = files.filter((f) => path.relative(SAMPLES, f).startsWith(family));
    const fast = taken.filter((t) => t.startsWith(family));
    assert.equal(fast.length, all.length, `${family}: fast for ${fast.length} of ${all.length}`);
  }
  const compressed = taken.filter((t) => t.startsWith('compressed/same-ct-image/'));
  assert.ok(compressed.length >= 10, `compressed CT slice, fast in ${compressed.length} syntaxes`);
});

test('values vendors write oddly read the same both ways', async () => {
  const ctDir = path.join(SAMPLES, 'ct-series');
  const series = (await readdir(ctDir))[0]!;
  const slice = await readFile(path.join(ctDir, series, (await readdir(path.join(ctDir, series)))[0]!));
  const t = {
    instanceNumber: tagNumber(0x0020, 0x0013),
    modality: tagNumber(0x0008, 0x0060),
    seriesDescription: tagNumber(0x0008, 0x103e),
    studyUid: tagNumber(0x0020, 0x000d),
    patientName: tagNumber(0x0010, 0x0010),
    patientId: tagNumber(0x0010, 0x0020),
  };
  const edits: [string, number, string | Buffer, boolean][] = [
    // name, tag, new value, whether the fast path must take it
    ['IS with a letter', t.instanceNumber, '12a', true],
    ['IS padded and signed', t.instanceNumber, ' +7 ', true],
    ['IS multi-valued', t.instanceNumber, '3\\4', true],
    ['IS empty', t.instanceNumber, '', true],
    ['IS garbage', t.instanceNumber, 'abc', true],
    ['IS exponent', t.instanceNumber, '1e2', true],
    ['CS multi-valued with spaces', t.modality, ' CT \\MR', true],
    ['LO with a backslash first', t.seriesDescription, '\\second', true],
    ['LO with trailing NULs', t.seriesDescription, Buffer.from('HEAD\0\0', 'latin1'), true],
    ['LO in Latin-1', t.seriesDescription, Buffer.from('Sch\u00e4del', 'latin1'), false],
    ['LO with an escape', t.seriesDescription, Buffer.from('\u001b$B', 'latin1'), false],
    ['UI with a space and junk', t.studyUid, '1.2.840.99 x3', true],
    ['UI multi-valued', t.studyUid, '1.2.3\\1.2.4', true],
    ['PN with groups', t.patientName, 'Doe^John=Ideo=Phon', true],
    ['PN empty first value', t.patientName, '\\Roe^Jane', true],
    ['PN ideographic only', t.patientName, '=Ideo', true],
    ['LO patient ID long', t.patientId, 'X'.repeat(70), true],
  ];
  for (const [name, tag, value, fast] of edits) {
    const bytes = replaceTopLevelValues(
      slice,
      new Map([[tag, typeof value === 'string' ? Buffer.from(value, 'latin1') : value]]),
    );
    assert.equal(await agree(bytes, name), fast, `${name}: fast path ${fast ? 'taken' : 'declined'}`);
  }
});
