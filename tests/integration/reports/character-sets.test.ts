import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readNaturalizedHeader } from '../../../src/dicom/part10.ts';
import type { ModelResult, SegmentationResult } from '../../../src/pipeline/findings.ts';
import { buildSegmentation } from '../../../src/reports/seg/segmentation.ts';
import { buildMeasurementReport } from '../../../src/reports/sr/tid1500.ts';
import { dciodvfy, mrSlices } from '../../helpers/dicom-tools.ts';

// The SR and SEG declare the source's Specific Character Set and carry its patient name byte for byte,
// where the text written means the same in that character set: 7-bit text (any character set), ISO 2022
// text with code extensions (kept as its escape sequences), and UTF-8. Each source is a real MR slice
// whose character set and name dcmtk rewrote in the file with the bytes given here.

const WM = { value: '33999003', scheme: 'SCT', meaning: 'White matter' };
let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-charset-'));
});
after(() => rm(dir, { recursive: true, force: true }));

/** The value bytes of a top-level element of an Explicit VR Little Endian file, found by tag and VR. */
function rawValue(file: Buffer, group: number, element: number, vr: string): Buffer {
  const head = Buffer.alloc(6);
  head.writeUInt16LE(group, 0);
  head.writeUInt16LE(element, 2);
  head.write(vr, 4, 'latin1');
  const at = file.indexOf(head, 132);
  assert.ok(at > 0, `(${group.toString(16)},${element.toString(16)}) ${vr} is in the file`);
  const length = file.readUInt16LE(at + 6);
  return file.subarray(at + 8, at + 8 + length);
}

async function derivedFrom(name: string, charset: Buffer, patientName: Buffer): Promise<Buffer[]> {
  const files = mrSlices(10, 12).map((_, i) => path.join(dir, `${name}-${i}.dcm`));
  for (const [i, src] of mrSlices(10, 12).entries()) {
    await copyFile(src, files[i]!);
    // dcmodify writes the argument's bytes into the file as they are (Node passes arguments as UTF-8,
    // so only 7-bit and UTF-8 bytes can be given this way).
    execFileSync('dcmodify', [
      '-nb',
      '-i',
      Buffer.concat([Buffer.from('(0008,0005)='), charset]).toString('utf8'),
      '-i',
      Buffer.concat([Buffer.from('(0010,0010)='), patientName]).toString('utf8'),
      files[i]!,
    ]);
  }
  const source = await readFile(files[0]!);
  assert.deepEqual(
    rawValue(source, 0x0010, 0x0010, 'PN').toString('latin1').trimEnd(),
    patientName.toString('latin1'),
  );
  const headers = await Promise.all(files.map((f) => readNaturalizedHeader(f)));
  const rows = headers[0]!.Rows as number;
  const columns = headers[0]!.Columns as number;
  const result: ModelResult & { segmentation: SegmentationResult } = {
    model: { id: 'm', name: 'MeshNet', version: '1.0', manufacturer: 'brainchop', uid: '2.25.77' },
    findings: [{ kind: 'volume', label: 'white matter', concept: WM, volumeMl: 3.25, voxelCount: 800 }],
    sources: headers.map((h, i) => ({
      sopClassUid: h.SOPClassUID as string,
      sopInstanceUid: h.SOPInstanceUID as string,
      seriesUid: h.SeriesInstanceUID as string,
      path: files[i]!,
    })),
    provider: 'cpu',
    inferenceMs: 1,
    segmentation: {
      rows,
      columns,
      slices: headers.map(() => new Uint8Array(rows * columns).fill(1, 5000, 6000)),
      segments: [{ labelValue: 1, label: 'White Matter', concept: WM }],
    },
  };
  const sr = buildMeasurementReport({
    result,
    sourceHeader: headers[0]!,
    sopInstanceUid: '2.25.600000000000000000000000000000000001',
    seriesInstanceUid: '2.25.600000000000000000000000000000000002',
  });
  const seg = buildSegmentation({
    result,
    sourceHeaders: headers,
    sopInstanceUid: '2.25.600000000000000000000000000000000003',
    seriesInstanceUid: '2.25.600000000000000000000000000000000004',
  })!;
  for (const [kind, bytes] of [
    ['sr', sr],
    ['seg', seg],
  ] as const) {
    const file = path.join(dir, `${name}-${kind}.dcm`);
    await writeFile(file, bytes);
    const v = await dciodvfy(file);
    assert.deepEqual(v.errors, [], `${name} ${kind}:\n${v.output}`);
  }
  const sourceCharset = rawValue(source, 0x0008, 0x0005, 'CS');
  const sourceName = rawValue(source, 0x0010, 0x0010, 'PN');
  for (const derived of [sr, seg]) {
    assert.deepEqual(
      rawValue(derived, 0x0008, 0x0005, 'CS'),
      sourceCharset,
      `${name}: Specific Character Set`,
    );
    assert.deepEqual(rawValue(derived, 0x0010, 0x0010, 'PN'), sourceName, `${name}: patient name bytes`);
  }
  return [sr, seg];
}

test('ISO 2022 IR 87 (Japanese, code extensions): charset and patient name bytes as the source has them', async () => {
  const name = Buffer.from(
    'Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B',
    'latin1',
  );
  await derivedFrom('jis', Buffer.from('\\ISO 2022 IR 87'), name);
  await derivedFrom('jis6', Buffer.from('ISO 2022 IR 6\\ISO 2022 IR 87'), name);
});

test('ISO_IR 192 (UTF-8): charset and patient name bytes as the source has them', async () => {
  await derivedFrom('utf8', Buffer.from('ISO_IR 192'), Buffer.from('Müller^Hans=山田^太郎', 'utf8'));
});

test('a 7-bit name keeps the source character set, whatever it is', async () => {
  await derivedFrom('latin1-ascii', Buffer.from('ISO_IR 100'), Buffer.from('Doe^John'));
  await derivedFrom('gb-ascii', Buffer.from('GB18030'), Buffer.from('Wang^Fang'));
});
