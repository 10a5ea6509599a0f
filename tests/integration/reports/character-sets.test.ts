import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readNaturalizedHeader } from '../../../src/dicom/part10.ts';
import { whiteMatterResultOver } from '../../helpers/reports.ts';
import { buildSegmentation } from '../../../src/reports/seg/segmentation.ts';
import { buildMeasurementReport } from '../../../src/reports/sr/tid1500.ts';
import { dciodvfy, dsrdump, mrSlices } from '../../helpers/dicom-tools.ts';
import { replaceTopLevelValues, tagNumber, topLevelValue } from '../../helpers/raw-elements.ts';

// The SR and SEG declare the source's Specific Character Set and carry its patient name byte for byte,
// whatever the character set: Latin-1, UTF-8, GB18030, ISO 2022 IR 87 with and without code extensions,
// and 7-bit names in any set. Each source is a real MR slice whose character set and name are rewritten
// in the file with the bytes given here.

let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-charset-'));
});
after(() => rm(dir, { recursive: true, force: true }));

/** The value bytes of a top-level element, padding included. */
function rawValue(file: Buffer, group: number, element: number): Buffer {
  const value = topLevelValue(file, tagNumber(group, element));
  assert.ok(value !== undefined, `(${group.toString(16)},${element.toString(16)}) is in the file`);
  return value;
}

async function derivedFrom(
  name: string,
  charset: Buffer,
  patientName: Buffer,
  studyDescription?: Buffer,
): Promise<Buffer[]> {
  const files = mrSlices(10, 12).map((_, i) => path.join(dir, `${name}-${i}.dcm`));
  for (const [i, src] of mrSlices(10, 12).entries()) {
    await copyFile(src, files[i]!);
    // dcmodify inserts the elements; their bytes are then written as given (Node passes arguments as
    // UTF-8, so Latin-1 or GB18030 bytes cannot be given to dcmodify).
    execFileSync('dcmodify', [
      '-nb',
      '-i',
      '(0008,0005)=X',
      '-i',
      '(0010,0010)=X',
      '-i',
      '(0008,1030)=X',
      files[i]!,
    ]);
    const values = new Map([
      [tagNumber(0x0008, 0x0005), charset],
      [tagNumber(0x0010, 0x0010), patientName],
    ]);
    if (studyDescription) values.set(tagNumber(0x0008, 0x1030), studyDescription);
    const edited = replaceTopLevelValues(await readFile(files[i]!), values);
    await writeFile(files[i]!, edited);
  }
  const source = await readFile(files[0]!);
  assert.deepEqual(
    rawValue(source, 0x0010, 0x0010).toString('latin1').trimEnd(),
    patientName.toString('latin1'),
  );
  const headers = await Promise.all(files.map((f) => readNaturalizedHeader(f)));
  const result = whiteMatterResultOver(headers, files);

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
    if (kind === 'sr') {
      // dsrdump reads the document tree; +U8 converts its text to UTF-8 from the declared character set.
      // dcmtk's converter (glibc iconv) has no ISO 2022 IR 87: there it reads the bytes as they are and
      // warns that the character set is unsupported, which is dcmtk's limit, not an error in the file.
      const iso2022 = charset.toString('latin1').includes('ISO 2022');
      const dump = await dsrdump(file, iso2022 ? [] : ['+U8']);
      assert.equal(dump.code, 0, dump.stderr);
      assert.doesNotMatch(dump.stderr, /^[EF]:/m, dump.stderr);
      if (!iso2022) {
        // The name as dcmtk decodes it from the declared character set is the source's name.
        const label = { 'ISO_IR 100': 'latin1', GB18030: 'gb18030' }[charset.toString('latin1')] ?? 'utf-8';
        const decoded = new TextDecoder(label).decode(patientName).split('=')[0]!;
        assert.ok(
          dump.stdout.includes(decoded.replace(/\^/g, ' ')) || dump.stdout.includes(decoded),
          dump.stdout,
        );
      }
    }
  }
  const sourceCharset = rawValue(source, 0x0008, 0x0005);
  const sourceName = rawValue(source, 0x0010, 0x0010);
  for (const derived of [sr, seg]) {
    assert.deepEqual(rawValue(derived, 0x0008, 0x0005), sourceCharset, `${name}: Specific Character Set`);
    assert.deepEqual(rawValue(derived, 0x0010, 0x0010), sourceName, `${name}: patient name bytes`);
  }
  return [sr, seg];
}

const JIS_NAME = Buffer.from(
  'Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B',
  'latin1',
);

test('ISO 2022 IR 87 (Japanese, code extensions): charset and patient name bytes as the source has them', async () => {
  await derivedFrom('jis', Buffer.from('\\ISO 2022 IR 87'), JIS_NAME);
  await derivedFrom('jis6', Buffer.from('ISO 2022 IR 6\\ISO 2022 IR 87'), JIS_NAME);
});

test('ISO 2022 IR 87 single-valued: the escape sequences are kept, not rewritten as UTF-8', async () => {
  // 山田^太郎 in JIS X 0208, each run of kanji between ESC $ B and ESC ( B.
  await derivedFrom(
    'jis-single',
    Buffer.from('ISO 2022 IR 87'),
    Buffer.from('\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B', 'latin1'),
  );
  await derivedFrom('jis-single-groups', Buffer.from('ISO 2022 IR 87'), JIS_NAME);
});

test('ISO_IR 100 (Latin-1): a name with umlauts keeps its one-byte characters', async () => {
  const name = Buffer.from('Müller^Jürgen', 'latin1');
  assert.equal(name.length, 13, 'one byte per character');
  await derivedFrom('latin1', Buffer.from('ISO_IR 100'), name);
});

test('GB18030 (Chinese): a name in two-byte characters keeps its bytes', async () => {
  // 张^三 in GB18030 (GB2312 code points D5C5 and C8FD).
  await derivedFrom('gb18030', Buffer.from('GB18030'), Buffer.from([0xd5, 0xc5, 0x5e, 0xc8, 0xfd]));
});

test('ISO_IR 192 (UTF-8): charset and patient name bytes as the source has them', async () => {
  await derivedFrom('utf8', Buffer.from('ISO_IR 192'), Buffer.from('Müller^Hans=山田^太郎', 'utf8'));
  await derivedFrom('utf8-es', Buffer.from('ISO_IR 192'), Buffer.from('Ñandú^José', 'utf8'));
});

test('a 7-bit name keeps the source character set, whatever it is', async () => {
  await derivedFrom('latin1-ascii', Buffer.from('ISO_IR 100'), Buffer.from('Doe^John'));
  await derivedFrom('gb-ascii', Buffer.from('GB18030'), Buffer.from('Wang^Fang'));
});

test('an over-long LO in a legacy character set is cut to 64 characters, in the source bytes', async () => {
  // 70 characters in Latin-1 (one byte each), and 70 hanzi in GB18030 (two bytes each).
  const latin1 = Buffer.from(`Ärztliche Übersicht Thorax ${'ä'.repeat(43)}`, 'latin1');
  assert.equal(latin1.length, 70);
  for (const derived of await derivedFrom(
    'latin1-long',
    Buffer.from('ISO_IR 100'),
    Buffer.from('Müller^Jürgen', 'latin1'),
    latin1,
  )) {
    assert.deepEqual(rawValue(derived, 0x0008, 0x1030), latin1.subarray(0, 64));
  }
  const hanzi = Buffer.concat(Array.from({ length: 70 }, () => Buffer.from([0xd0, 0xd8]))); // 胸 × 70
  for (const derived of await derivedFrom(
    'gb-long',
    Buffer.from('GB18030'),
    Buffer.from([0xd5, 0xc5, 0x5e, 0xc8, 0xfd]),
    hanzi,
  )) {
    // 64 characters, but LO's 64 counted in bytes too (as dciodvfy and many archives count): 32 hanzi.
    assert.deepEqual(rawValue(derived, 0x0008, 0x1030), hanzi.subarray(0, 64), '32 two-byte characters');
  }
});
