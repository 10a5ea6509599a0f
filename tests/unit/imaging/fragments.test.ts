import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeImage, DecodeError, readStoredPixels } from '../../../src/imaging/decode.ts';
import {
  cutCodestream,
  encodePixelDataElements,
  readEncapsulatedItems,
  splitFrames,
} from '../../../src/imaging/encapsulation.ts';
import {
  codestreamsOf,
  encodedWith,
  writeFragmented,
  writePart10,
  type CodestreamSource,
} from '../../helpers/fragmented.ts';

// Multi-frame encapsulated Pixel Data whose frames span several fragments (PS3.5 A.4), for every
// compressed syntax the decoder reads, with no offset table, a Basic Offset Table and an Extended
// Offset Table. Fixtures are the real samples' code streams re-encapsulated at test time.

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const samples = path.join(path.resolve(repoRoot, '../shared'), 'dicom-samples');
const sameCt = path.join(samples, 'compressed/same-ct-image');
const enhancedCt = path.join(samples, 'multiframe/enhanced-ct-nema-2frames-CT0012.dcm');
const cine = path.join(samples, 'multiframe/us-sonosite-30frames-jpeg-baseline.dcm');

const SAME_CT: Record<string, string> = {
  '1.2.840.10008.1.2.4.50': 'ct_1.2.840.10008.1.2.4.50_jpeg-baseline-8bit.dcm',
  '1.2.840.10008.1.2.4.51': 'ct_1.2.840.10008.1.2.4.51_jpeg-extended-12bit.dcm',
  '1.2.840.10008.1.2.4.57': 'ct_1.2.840.10008.1.2.4.57_jpeg-lossless-p14.dcm',
  '1.2.840.10008.1.2.4.70': 'ct_1.2.840.10008.1.2.4.70_jpeg-lossless-sv1.dcm',
  '1.2.840.10008.1.2.4.80': 'ct_1.2.840.10008.1.2.4.80_jpeg-ls-lossless.dcm',
  '1.2.840.10008.1.2.4.81': 'ct_1.2.840.10008.1.2.4.81_jpeg-ls-near-lossless.dcm',
  '1.2.840.10008.1.2.4.90': 'ct_1.2.840.10008.1.2.4.90_jpeg2000-lossless.dcm',
  '1.2.840.10008.1.2.4.91': 'ct_1.2.840.10008.1.2.4.91_jpeg2000.dcm',
  '1.2.840.10008.1.2.5': 'ct_1.2.840.10008.1.2.5_rle-lossless.dcm',
};
const TABLES = ['none', 'basic', 'extended'] as const;

async function withDir<T>(use: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'fragments-'));
  try {
    return await use(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function storedFrames(file: string): Promise<Uint8Array[]> {
  return (await readStoredPixels(await readFile(file))).frames;
}

function assertFramesEqual(actual: Uint8Array[], expected: Uint8Array[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: frame count`);
  actual.forEach((frame, i) =>
    assert.ok(Buffer.from(frame).equals(Buffer.from(expected[i]!)), `${what}: frame ${i + 1} differs`),
  );
}

test('the field case: JPEG baseline, 2 frames in 11 fragments, empty Basic Offset Table', async () => {
  await withDir(async (dir) => {
    const source = await codestreamsOf(cine);
    const two = { ...source, frames: source.frames.slice(0, 2) };
    const file = path.join(dir, 'field.dcm');
    await writeFragmented(file, two, { fragments: [5, 6], table: 'none' });
    const expected = (await storedFrames(cine)).slice(0, 2);
    assertFramesEqual(await storedFrames(file), expected, 'field case');
    const image = await decodeImage(file, { frames: 'all' });
    assert.equal(image.pixels.length, 2);
  });
});

test('every compressed syntax, frames cut into 3–6 fragments, no table / BOT / EOT: same pixels as the original', async () => {
  await withDir(async (dir) => {
    for (const [syntax, name] of Object.entries(SAME_CT)) {
      const original = path.join(sameCt, name);
      const reference = (await storedFrames(original))[0]!;
      const source = await codestreamsOf(original);
      assert.equal(source.transferSyntaxUid, syntax);
      const three: CodestreamSource = { ...source, frames: [0, 1, 2].map(() => source.frames[0]!) };
      for (const table of TABLES) {
        for (const fragments of [1, [3, 5, 6]] as const) {
          const file = path.join(dir, `${syntax}-${table}-${String(fragments)}.dcm`);
          await writeFragmented(file, three, { fragments: fragments as number | number[], table, seed: 3 });
          const what = `${syntax} ${table} ${String(fragments)} fragments`;
          if (syntax === '1.2.840.10008.1.2.5' && table === 'none' && fragments !== 1) {
            // RLE: one fragment per frame (PS3.5 A.4.2); without a table nothing else can tell frames apart.
            await assert.rejects(storedFrames(file), (err: unknown) => {
              assert.ok(err instanceof DecodeError, `${what}: ${String(err)}`);
              assert.match(err.message, /each frame must be exactly one fragment/);
              return true;
            });
            continue;
          }
          assertFramesEqual(await storedFrames(file), [reference, reference, reference], what);
        }
      }
    }
  });
});

test('distinct frames keep their order: CT0012 encoded by dcmjs-codecs, ultrasound cine; lossless equal the uncompressed frames', async () => {
  await withDir(async (dir) => {
    const uncompressed = await storedFrames(enhancedCt);
    assert.ok(!Buffer.from(uncompressed[0]!).equals(Buffer.from(uncompressed[1]!)), 'the two frames differ');
    for (const syntax of [
      '1.2.840.10008.1.2.5',
      '1.2.840.10008.1.2.4.70',
      '1.2.840.10008.1.2.4.80',
      '1.2.840.10008.1.2.4.81',
      '1.2.840.10008.1.2.4.90',
      '1.2.840.10008.1.2.4.91',
    ]) {
      const source = await encodedWith(enhancedCt, syntax);
      assert.equal(source.frames.length, 2);
      // Lossy: each code stream decoded on its own, as a one-frame one-fragment file.
      const lossy = syntax.endsWith('.81') || syntax.endsWith('.91');
      const expected = lossy
        ? await Promise.all(
            source.frames.map(async (frame, i) => {
              const single = path.join(dir, `${syntax}-single-${i}.dcm`);
              await writePart10(single, { ...source, frames: [frame] }, [[frame]], 'none');
              return (await storedFrames(single))[0]!;
            }),
          )
        : uncompressed;
      for (const table of TABLES) {
        const fragments = syntax === '1.2.840.10008.1.2.5' && table === 'none' ? 1 : [4, 3];
        const file = path.join(dir, `${syntax}-${table}.dcm`);
        await writeFragmented(file, source, { fragments, table, seed: 5 });
        assertFramesEqual(await storedFrames(file), expected, `${syntax} ${table}`);
      }
    }
    const cineSource = await codestreamsOf(cine);
    const four = { ...cineSource, frames: cineSource.frames.slice(0, 4) };
    const cineExpected = (await storedFrames(cine)).slice(0, 4);
    for (const table of TABLES) {
      const file = path.join(dir, `cine-${table}.dcm`);
      await writeFragmented(file, four, { fragments: [3, 4, 5, 6], table, seed: 9 });
      assertFramesEqual(await storedFrames(file), cineExpected, `cine ${table}`);
    }
  });
});

// --- The splitter on its own: well-formed and hostile item sequences.

function items(frames: Uint8Array[][], table: 'none' | 'basic' | 'extended') {
  const bytes = encodePixelDataElements(frames, table);
  // The (7FE0,0010) header is the 12 bytes before the Basic Offset Table item.
  const at = table === 'extended' ? 12 + frames.length * 8 + 12 + frames.length * 8 + 12 : 12;
  return { bytes, at, parsed: readEncapsulatedItems(bytes, at) };
}

const jpegLike = (n: number, fill: number) => {
  const d = new Uint8Array(n).fill(fill);
  d.set([0xff, 0xd8, 0xff, 0xe0]);
  d.set([0xff, 0xd9], n - 2);
  return d;
};

test('splitFrames: tables, markers and one fragment per frame give the same frames', () => {
  const frames = [jpegLike(100, 1), jpegLike(64, 2), jpegLike(250, 3)];
  const cut = frames.map((f, i) => cutCodestream(f, 2 + i, i));
  for (const table of TABLES) {
    const { parsed } = items(cut, table);
    const tables =
      table === 'extended'
        ? {
            extendedOffsets: offsetsOf(cut),
            extendedLengths: cut.map((f) => f.reduce((n, x) => n + x.length, 0)),
          }
        : {};
    const split = splitFrames(parsed, 3, 'jpeg', tables);
    split.forEach((f, i) => assert.deepEqual([...f], [...frames[i]!], `${table} frame ${i + 1}`));
  }
  const one = items(
    frames.map((f) => [f]),
    'none',
  ).parsed;
  assert.deepEqual(
    splitFrames(one, 3, 'other').map((f) => f.length),
    [100, 64, 250],
  );
});

function offsetsOf(frames: Uint8Array[][]): number[] {
  const out: number[] = [];
  let at = 0;
  for (const f of frames) {
    out.push(at);
    at += f.reduce((n, x) => n + 8 + x.length + (x.length % 2), 0);
  }
  return out;
}

test('hostile encapsulated Pixel Data is a DecodeError with a reason, quickly', () => {
  const frames = [jpegLike(100, 1), jpegLike(64, 2)].map((f, i) => cutCodestream(f, 3, i));
  const started = Date.now();
  const rejects = (fn: () => unknown, reason: RegExp) =>
    assert.throws(fn, (err: unknown) => {
      assert.ok(err instanceof DecodeError, String(err));
      assert.match(err.message, reason);
      return true;
    });
  const { bytes, at } = items(frames, 'basic');
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const withBot = (entries: number[]) => {
    const copy = bytes.slice();
    const v = new DataView(copy.buffer);
    entries.forEach((e, i) => v.setUint32(at + 8 + i * 4, e, true));
    return readEncapsulatedItems(copy, at);
  };
  const second = view.getUint32(at + 12, true);
  rejects(() => splitFrames(withBot([0, 0x7ffffff0]), 2, 'jpeg'), /points past the end/);
  rejects(() => splitFrames(withBot([second, 0]), 2, 'jpeg'), /first entry is \d+, not 0/);
  rejects(() => splitFrames(withBot([0, second + 2]), 2, 'jpeg'), /does not point at a fragment/);
  rejects(() => splitFrames(withBot([0, second]), 3, 'jpeg'), /has 2 entries, Number of Frames is 3/);
  const three = items([...frames, frames[0]!], 'basic');
  const v3 = new DataView(three.bytes.buffer);
  const [, b, c] = [0, 1, 2].map((i) => v3.getUint32(three.at + 8 + i * 4, true));
  v3.setUint32(three.at + 12, c!, true);
  v3.setUint32(three.at + 16, b!, true);
  rejects(() => splitFrames(readEncapsulatedItems(three.bytes, three.at), 3, 'jpeg'), /not increasing/);

  const none = items(frames, 'none').parsed;
  const offsets = offsetsOf(frames);
  const lengths = frames.map((f) => f.reduce((n, x) => n + x.length, 0));
  rejects(
    () =>
      splitFrames(none, 2, 'jpeg', {
        extendedOffsets: offsets,
        extendedLengths: [lengths[0]!, lengths[1]! + 10],
      }),
    /Extended Offset Table Lengths gives frame 2/,
  );
  rejects(() => splitFrames(none, 2, 'jpeg', { extendedOffsets: offsets }), /must be present together/);
  rejects(
    () => splitFrames(none, 3, 'jpeg', { extendedOffsets: offsets, extendedLengths: lengths }),
    /Extended Offset Table has 2 entries, Number of Frames is 3/,
  );
  // No SOI anywhere: nothing tells the frames apart.
  const noSoi = items(
    [cutCodestream(new Uint8Array(100).fill(7), 3), cutCodestream(new Uint8Array(80).fill(8), 2)],
    'none',
  ).parsed;
  rejects(() => splitFrames(noSoi, 2, 'jpeg'), /first fragment does not start a JPEG/);
  rejects(() => splitFrames(noSoi, 2, 'jpeg2000'), /JPEG 2000/);
  rejects(
    () => splitFrames(none, 3, 'jpeg'),
    /found 2 JPEG \(SOI … EOI\) code streams in 6 fragments, Number of Frames is 3/,
  );
  rejects(() => splitFrames(none, 7, 'jpeg'), /6 fragments cannot hold 7 frames/);
  rejects(() => splitFrames(none, 2, 'rle'), /each frame must be exactly one fragment/);
  // Item level: a length past the end, no delimiter, a foreign tag, an undefined length.
  const raw = items(frames, 'none');
  const cutShort = raw.bytes.subarray(0, raw.bytes.length - 20);
  rejects(() => readEncapsulatedItems(cutShort, raw.at), /truncated/);
  rejects(
    () => readEncapsulatedItems(raw.bytes.subarray(0, raw.bytes.length - 8), raw.at),
    /without a Sequence Delimitation Item/,
  );
  const foreign = raw.bytes.slice();
  foreign.set([0x08, 0x00, 0x18, 0x00], raw.at + 8);
  rejects(() => readEncapsulatedItems(foreign, raw.at), /unexpected tag \(0008,0018\)/);
  const undefinedLength = raw.bytes.slice();
  new DataView(undefinedLength.buffer).setUint32(raw.at + 12, 0xffffffff, true);
  rejects(() => readEncapsulatedItems(undefinedLength, raw.at), /undefined length/);
  rejects(() => readEncapsulatedItems(raw.bytes, raw.at, 3), /more than 3 fragments/);
  assert.ok(Date.now() - started < 2000, 'hostile cases are refused quickly');
});

test('a hostile Basic Offset Table in a real file is a DecodeError from the decoder', async () => {
  await withDir(async (dir) => {
    const source = await codestreamsOf(path.join(sameCt, SAME_CT['1.2.840.10008.1.2.4.70']!));
    const file = path.join(dir, 'bot.dcm');
    await writeFragmented(
      file,
      { ...source, frames: [source.frames[0]!, source.frames[0]!] },
      { fragments: 3, table: 'basic' },
    );
    const bytes = await readFile(file);
    const tag = bytes.lastIndexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x42]));
    bytes.writeUInt32LE(0x7ffffff0, tag + 12 + 8 + 4); // second BOT entry
    await assert.rejects(readStoredPixels(bytes), (err: unknown) => {
      assert.ok(err instanceof DecodeError, String(err));
      assert.match(err.message, /Basic Offset Table's entry 2 \(2147483632\) points past the end/);
      return true;
    });
  });
});
