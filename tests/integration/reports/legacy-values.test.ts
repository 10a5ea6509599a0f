import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { readNaturalizedHeader } from '../../../src/dicom/part10.ts';
import { log } from '../../../src/observability/log.ts';
import { whiteMatterResultOver } from '../../helpers/reports.ts';
import { buildSegmentation } from '../../../src/reports/seg/segmentation.ts';
import { buildMeasurementReport } from '../../../src/reports/sr/tid1500.ts';
import { dciodvfy, dsrdump, mrSlices, parseDicom } from '../../helpers/dicom-tools.ts';

// Real MR slices whose patient and study attributes were rewritten (by dcmtk, in the file) the way older
// scanners and RIS write them. The SR and the SEG built from them must be valid DICOM with the values in
// their DICOM form; a value with no DICOM form is left out and named in the log, never quoted.

const NOW = new Date(2024, 4, 17, 13, 45, 30);
const LONG_DESCRIPTION = `Legacy study description ${'x'.repeat(175)}`;
let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-legacy-'));
});
after(() => rm(dir, { recursive: true, force: true }));

/**
 * Copies of three real MR slices with the given attributes set by dcmodify, and then the byte patches
 * dcmodify cannot make (NULs inside a value): each `[from, to]` replaces bytes of equal length.
 */
async function legacySlices(
  name: string,
  attrs: Record<string, string>,
  patches: [string, Buffer][] = [],
): Promise<{ files: string[]; headers: Record<string, unknown>[] }> {
  const files: string[] = [];
  for (const [i, src] of mrSlices(10, 13).entries()) {
    const file = path.join(dir, `${name}-${i}.dcm`);
    await copyFile(src, file);
    execFileSync('dcmodify', [
      '-nb',
      ...Object.entries(attrs).flatMap(([tag, value]) => ['-i', `${tag}=${value}`]),
      file,
    ]);
    let bytes = await readFile(file);
    for (const [from, to] of patches) {
      const at = bytes.indexOf(Buffer.from(from, 'latin1'));
      assert.ok(at > 0 && to.length === from.length, `patch ${from}`);
      bytes = Buffer.concat([bytes.subarray(0, at), to, bytes.subarray(at + to.length)]);
    }
    await writeFile(file, bytes);
    files.push(file);
  }
  // The project's own reader, as the reports stage reads the spooled source.
  return { files, headers: await Promise.all(files.map((f) => readNaturalizedHeader(f))) };
}

/** Builds the SR and the SEG, writes them out, and collects the log lines written meanwhile. */
async function build(
  name: string,
  files: string[],
  headers: Record<string, unknown>[],
): Promise<{ sr: string; seg: string; logLines: Record<string, unknown>[] }> {
  const r = whiteMatterResultOver(headers, files);
  const stream = (log as unknown as Record<symbol, { write(s: string): boolean }>)[pino.symbols.streamSym]!;
  const write = stream.write;
  const lines: string[] = [];
  stream.write = (s: string) => (lines.push(s), true);
  let srBytes: Buffer;
  let segBytes: Buffer | undefined;
  try {
    srBytes = buildMeasurementReport({
      result: r,
      sourceHeader: headers[0]!,
      sopInstanceUid: '2.25.500000000000000000000000000000000001',
      seriesInstanceUid: '2.25.500000000000000000000000000000000002',
      now: NOW,
    });
    segBytes = buildSegmentation({
      result: r,
      sourceHeaders: headers,
      sopInstanceUid: '2.25.500000000000000000000000000000000003',
      seriesInstanceUid: '2.25.500000000000000000000000000000000004',
      now: NOW,
    });
  } finally {
    stream.write = write;
  }
  assert.ok(segBytes, 'a SEG was built');
  const sr = path.join(dir, `${name}-sr.dcm`);
  const seg = path.join(dir, `${name}-seg.dcm`);
  await writeFile(sr, srBytes);
  await writeFile(seg, segBytes);
  return { sr, seg, logLines: lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

async function assertValid(sr: string, seg: string): Promise<void> {
  for (const file of [sr, seg]) {
    const v = await dciodvfy(file);
    assert.deepEqual(v.errors, [], `${path.basename(file)}:\n${v.output}`);
  }
  const d = await dsrdump(sr);
  assert.equal(d.code, 0, d.stderr);
  assert.doesNotMatch(d.stderr, /^E:|error/im);
  assert.match(d.stdout, /Imaging Measurement Report/);
}

test('legacy patient and study values become their DICOM form in a valid SR and SEG', async () => {
  const { files, headers } = await legacySlices(
    'legacy',
    {
      '(0008,0020)': '1997.04.24',
      '(0010,0030)': '1960-01-02',
      '(0008,0030)': '12:30:45.123',
      '(0008,1030)': LONG_DESCRIPTION,
      '(0008,0050)': 'ACC-1997-0000000042-X',
      '(0010,0040)': 'f',
      '(0020,0010)': 'ID42XXXX',
      '(0008,0090)': 'Smith^JaneYYYY',
    },
    [
      ['ID42XXXX', Buffer.from('ID42\0\0\0\0', 'latin1')],
      ['Smith^JaneYYYY', Buffer.from('Smith^Jane \0\0\0', 'latin1')],
    ],
  );
  // The legacy forms reached the reader as they are in the file.
  assert.equal(headers[0]!.StudyDate, '1997.04.24');
  assert.equal(headers[0]!.PatientSex, 'f');
  assert.match(String(headers[0]!.StudyID), /\0/);

  const { sr, seg, logLines } = await build('legacy', files, headers);
  await assertValid(sr, seg);
  for (const file of [sr, seg]) {
    const ds = parseDicom(await readFile(file));
    const what = path.basename(file);
    assert.equal(ds.StudyDate, '19970424', what);
    assert.equal(ds.PatientBirthDate, '19600102', what);
    assert.equal(ds.StudyTime, '123045.123', what);
    assert.equal(ds.StudyDescription, LONG_DESCRIPTION.slice(0, 64), what);
    assert.equal(ds.AccessionNumber, 'ACC-1997-0000000', what);
    assert.equal(ds.PatientSex, 'F', what);
    assert.equal(ds.StudyID, 'ID42', what);
    assert.deepEqual(ds.ReferringPhysicianName, [{ Alphabetic: 'Smith^Jane' }], what);
    // Untouched where valid.
    assert.deepEqual(ds.PatientName, headers[0]!.PatientName, what);
    assert.equal(ds.PatientID, headers[0]!.PatientID, what);
    assert.equal(ds.StudyInstanceUID, headers[0]!.StudyInstanceUID, what);
  }
  // Everything had a DICOM form: nothing was left out.
  assert.deepEqual(
    logLines.filter((l) => l.event === 'reports.attribute.omitted'),
    [],
  );
});

test('a value with no DICOM form is left out, and the log names the attribute but not the value', async () => {
  const { files, headers } = await legacySlices('hopeless', {
    '(0008,0020)': 'hello',
    '(0010,0030)': '1997.02.30',
    '(0010,0040)': 'unknown',
    '(0008,1030)': 'Chest PA',
  });
  const { sr, seg, logLines } = await build('hopeless', files, headers);
  await assertValid(sr, seg);
  for (const file of [sr, seg]) {
    const ds = parseDicom(await readFile(file));
    // Type 2: present with no value, as the module requires.
    assert.equal(ds.StudyDate, '', path.basename(file));
    assert.equal(ds.PatientBirthDate, '', path.basename(file));
    assert.equal(ds.PatientSex, '', path.basename(file));
    assert.equal(ds.StudyDescription, 'Chest PA');
    const dump = execFileSync('dcmdump', [file]).toString('latin1');
    assert.doesNotMatch(dump, /hello|1997\.02\.30|UNKNOWN/i);
  }
  const omitted = logLines.filter((l) => l.event === 'reports.attribute.omitted');
  assert.deepEqual(
    omitted.map((l) => [l.object, l.keyword, l.tag, l.vr]),
    [
      ['SR', 'PatientBirthDate', '(0010,0030)', 'DA'],
      ['SR', 'PatientSex', '(0010,0040)', 'CS'],
      ['SR', 'StudyDate', '(0008,0020)', 'DA'],
      ['SEG', 'PatientBirthDate', '(0010,0030)', 'DA'],
      ['SEG', 'PatientSex', '(0010,0040)', 'CS'],
      ['SEG', 'StudyDate', '(0008,0020)', 'DA'],
    ],
  );
  for (const line of omitted) {
    assert.equal(line.studyUid, headers[0]!.StudyInstanceUID);
    assert.equal(typeof line.reason, 'string');
    const text = JSON.stringify(line);
    for (const value of ['hello', '1997.02.30', '19970230', 'unknown', 'UNKNOWN'])
      assert.ok(!text.includes(value), `the log line quotes a value: ${text}`);
  }
});
