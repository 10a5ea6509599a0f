import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import dicomParser from 'dicom-parser';
import { decodeImage, readStoredPixels } from '../../../../src/imaging/decode.ts';
import { decodeJpegExtended, JpegDataError } from '../../../../src/imaging/codecs/jpeg-extended.ts';
import { writeSynthetic } from '../../../helpers/synthetic-dicom.ts';
import { SAMPLES } from '../../../helpers/ingest.ts';

// Our JPEG Extended decoder against dcmtk's (IJG libjpeg 6b, 12-bit build): the same integer IDCT, so
// every decoded sample must be identical, not merely close. Fixtures beyond the one real .4.51 sample
// are encoded by dcmtk dcmcjpeg from real or synthetic images at test time.

const sameCt = path.join(SAMPLES, 'compressed/same-ct-image');
const CT_451 = path.join(sameCt, 'ct_1.2.840.10008.1.2.4.51_jpeg-extended-12bit.dcm');
const CT_REFERENCE = path.join(sameCt, 'ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm');
const ENHANCED_MR = path.join(SAMPLES, 'multiframe/enhanced-mr-10frames-small.dcm');

function dcmtk(tool: string, args: string[]): void {
  execFileSync(tool, args, { timeout: 60_000, stdio: 'pipe' });
}

/** Every frame's stored bytes, ours from the compressed file and dcmtk's from its decompressed copy. */
async function assertSameAsDcmdjpeg(file: string, dir: string): Promise<number> {
  const reference = path.join(dir, `${path.basename(file)}.dcmdjpeg.dcm`);
  dcmtk('dcmdjpeg', [file, reference]);
  const ours = await readStoredPixels(await readFile(file));
  const theirs = await readStoredPixels(await readFile(reference));
  assert.equal(ours.frames.length, theirs.frames.length, file);
  ours.frames.forEach((frame, i) => assert.deepEqual(frame, theirs.frames[i], `${file} frame ${i + 1}`));
  return ours.frames.length;
}

/** The first encapsulated frame of a JPEG file: one code stream, as the decoder receives it. */
async function codeStream(file: string): Promise<Uint8Array> {
  const bytes = await readFile(file);
  const ds = dicomParser.parseDicom(bytes);
  return dicomParser.readEncapsulatedImageFrame(ds, ds.elements.x7fe00010!, 0);
}

test('the real 12-bit JPEG Extended CT decodes bit-identical to dcmtk, and close to the lossless original', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'jpeg-ext-'));
  try {
    await assertSameAsDcmdjpeg(CT_451, dir);
    // Lossy: in Hounsfield units it is within a few HU of the uncompressed slice, with no bias.
    const lossy = (await decodeImage(CT_451)).pixels[0]!;
    const original = (await decodeImage(CT_REFERENCE)).pixels[0]!;
    let sum = 0;
    let abs = 0;
    for (let i = 0; i < lossy.length; i++) {
      sum += lossy[i]! - original[i]!;
      abs += Math.abs(lossy[i]! - original[i]!);
    }
    assert.ok(Math.abs(sum / lossy.length) < 2, `mean error ${sum / lossy.length} HU`);
    assert.ok(abs / lossy.length < 6, `mean absolute error ${abs / lossy.length} HU`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('dcmcjpeg-encoded JPEG Extended: 12-bit multi-frame, 8-bit, and sizes that are not multiples of 8', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'jpeg-ext-'));
  try {
    const mr = path.join(dir, 'mr-12bit.dcm');
    dcmtk('dcmcjpeg', ['+ee', '+bt', ENHANCED_MR, mr]);
    assert.equal(await assertSameAsDcmdjpeg(mr, dir), 10);

    const ct8 = path.join(dir, 'ct-8bit.dcm');
    dcmtk('dcmcjpeg', ['+ee', '+be', '+q', '75', CT_REFERENCE, ct8]);
    assert.equal((await readStoredPixels(await readFile(ct8))).header.bitsAllocated, 8);
    await assertSameAsDcmdjpeg(ct8, dir);

    // 37 × 23: partial blocks on the right and bottom edges, a ramp plus a sharp edge.
    const rows = 23;
    const columns = 37;
    const ramp = new Uint16Array(rows * columns).map(
      (_, i) => ((i % columns) * 97 + (i > 400 ? 3000 : 0)) % 4096,
    );
    const odd12 = path.join(dir, 'odd-12bit-source.dcm');
    await writeSynthetic(
      odd12,
      { Rows: rows, Columns: columns, BitsStored: 12, HighBit: 11, PixelRepresentation: 0 },
      ramp,
    );
    const odd12Jpeg = path.join(dir, 'odd-12bit.dcm');
    dcmtk('dcmcjpeg', ['+ee', '+bt', odd12, odd12Jpeg]);
    await assertSameAsDcmdjpeg(odd12Jpeg, dir);
    const odd8 = path.join(dir, 'odd-8bit-source.dcm');
    await writeSynthetic(
      odd8,
      { Rows: rows, Columns: columns, BitsAllocated: 8, BitsStored: 8, HighBit: 7, PixelRepresentation: 0 },
      Uint8Array.from(ramp, (v) => v >> 4),
    );
    const odd8Jpeg = path.join(dir, 'odd-8bit.dcm');
    dcmtk('dcmcjpeg', ['+ee', '+be', odd8, odd8Jpeg]);
    await assertSameAsDcmdjpeg(odd8Jpeg, dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('JPEG code streams outside Process 2 & 4, or broken, are refused with a reason', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'jpeg-ext-'));
  try {
    const good = await codeStream(CT_451);
    const size = { rows: 512, columns: 512 };
    const refused = (stream: Uint8Array, reason: RegExp, limits = size) =>
      assert.throws(
        () => decodeJpegExtended(stream, limits),
        (err: unknown) => err instanceof JpegDataError && reason.test(err.message),
        String(reason),
      );
    assert.equal(decodeJpegExtended(good, size).samples.length, 512 * 512);

    const progressive = path.join(dir, 'progressive.dcm');
    dcmtk('dcmcjpeg', ['+ep', CT_REFERENCE, progressive]);
    refused(await codeStream(progressive), /progressive DCT JPEG is not JPEG Extended/);
    refused(good, /the JPEG frame is 512×512, the DICOM header says 256×512/, { rows: 512, columns: 256 });
    refused(good.subarray(0, good.length >> 1), /entropy-coded data ends early/);
    refused(good.subarray(0, 300), /runs past|truncated|ends early/);
    refused(good.subarray(2), /does not start with a JPEG SOI marker/);

    // Random damage to the entropy-coded data: an error or an image of the declared size, never a
    // hang or another kind of exception. Seeded, so a failure reproduces.
    let seed = 0x5eed;
    const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const sos = good.findIndex((b, i) => b === 0xff && good[i + 1] === 0xda);
    const scanStart = sos + 2 + ((good[sos + 2]! << 8) | good[sos + 3]!);
    let errors = 0;
    for (let round = 0; round < 200; round++) {
      const damaged = good.slice();
      for (let i = 0; i < 8; i++) {
        damaged[scanStart + Math.floor(random() * (damaged.length - scanStart - 2))] = Math.floor(
          random() * 256,
        );
      }
      try {
        assert.equal(decodeJpegExtended(damaged, size).samples.length, 512 * 512);
      } catch (err) {
        assert.ok(err instanceof JpegDataError, String(err));
        errors++;
      }
    }
    assert.ok(errors > 0, 'some damage is detected');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** One 8×8 block to encode: its DC coefficient and (run of zeros, value) pairs in zig-zag order. */
interface Block {
  dc: number;
  ac: [run: number, value: number][];
}

/**
 * A single-component JPEG Extended (SOF1) stream, encoded here because dcmcjpeg only writes what a sane
 * encoder would: these streams reach every coefficient size, 16-bit quantisers (IDCT overflow) and
 * restart intervals. DC symbols 0..15 are 5-bit codes; AC symbols 0..254 are 8-bit codes and 255 is
 * 9 bits, so any run/size pair can be written.
 */
function encodeJpeg(opts: {
  precision: 8 | 12;
  rows: number;
  columns: number;
  /** 64 quantisers in zig-zag order. */
  quant: number[];
  blocks: Block[];
  restartInterval?: number;
}): Uint8Array {
  const { precision, rows, columns, quant, blocks, restartInterval = 0 } = opts;
  const bytes: number[] = [0xff, 0xd8];
  const segment = (marker: number, body: number[]) =>
    bytes.push(0xff, marker, (body.length + 2) >> 8, (body.length + 2) & 255, ...body);
  segment(0xdb, [0x10, ...quant.flatMap((q) => [q >> 8, q & 255])]);
  segment(0xc1, [precision, rows >> 8, rows & 255, columns >> 8, columns & 255, 1, 1, 0x11, 0]);
  const counts = (length: number, n: number) =>
    Array.from({ length: 16 }, (_, i) => (i === length - 1 ? n : 0));
  segment(0xc4, [0x00, ...counts(5, 16), ...Array.from({ length: 16 }, (_, i) => i)]);
  const acCounts = counts(8, 255);
  acCounts[8] = 1;
  segment(0xc4, [0x10, ...acCounts, ...Array.from({ length: 256 }, (_, i) => i)]);
  if (restartInterval) segment(0xdd, [restartInterval >> 8, restartInterval & 255]);
  segment(0xda, [1, 1, 0x00, 0, 63, 0]);
  let acc = 0;
  let count = 0;
  const put = (value: number, length: number) => {
    for (let i = length - 1; i >= 0; i--) {
      acc = (acc << 1) | ((value >>> i) & 1);
      if (++count === 8) {
        bytes.push(acc);
        if (acc === 0xff) bytes.push(0x00);
        acc = 0;
        count = 0;
      }
    }
  };
  const flush = () => {
    while (count !== 0) put(1, 1);
  };
  const size = (v: number) => (v === 0 ? 0 : Math.floor(Math.log2(Math.abs(v))) + 1);
  const magnitude = (v: number) => {
    const s = size(v);
    put(v >= 0 ? v : v + (1 << s) - 1, s);
  };
  const acSymbol = (symbol: number) => (symbol < 255 ? put(symbol, 8) : put(510, 9));
  let predictor = 0;
  blocks.forEach((block, b) => {
    if (restartInterval && b > 0 && b % restartInterval === 0) {
      flush();
      bytes.push(0xff, 0xd0 + ((b / restartInterval - 1) % 8));
      predictor = 0;
    }
    const diff = block.dc - predictor;
    predictor = block.dc;
    put(size(diff), 5);
    magnitude(diff);
    let k = 1;
    for (const [run, value] of block.ac) {
      acSymbol((run << 4) | size(value));
      magnitude(value);
      k += run + 1;
    }
    if (k < 64) acSymbol(0x00); // EOB
  });
  flush();
  bytes.push(0xff, 0xd9);
  return Uint8Array.from(bytes);
}

test('random coefficients, 16-bit quantisers and restart intervals decode exactly as dcmtk does', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'jpeg-ext-'));
  try {
    let seed = 0x2545f491;
    const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const below = (n: number) => Math.floor(random() * n);
    const signed = (bits: number) => {
      if (bits === 0) return 0;
      const v = (1 << (bits - 1)) + below(1 << (bits - 1));
      return random() < 0.5 ? -v : v;
    };
    for (let t = 0; t < 36; t++) {
      const precision = t % 2 ? 12 : 8;
      // Gentle, large and extreme quantisers: the last overflow the IDCT's working range.
      const mode = t % 3;
      const quant = Array.from({ length: 64 }, () => 1 + below([40, 2000, 65535][mode]!));
      const rows = 1 + below(40);
      const columns = 1 + below(40);
      const maxBits = precision === 8 && mode !== 2 ? 10 : 14;
      let dc = 0;
      const blocks: Block[] = Array.from({ length: Math.ceil(rows / 8) * Math.ceil(columns / 8) }, () => {
        dc = Math.max(-32000, Math.min(32000, dc + signed(below(precision === 8 ? 11 : 15))));
        const ac: [number, number][] = [];
        for (let k = 1, n = below(20); n > 0; n--) {
          const run = below(4);
          if (k + run > 63) break;
          ac.push([run, signed(1 + below(maxBits))]);
          k += run + 1;
        }
        return { dc, ac };
      });
      const stream = encodeJpeg({
        precision,
        rows,
        columns,
        quant,
        blocks,
        restartInterval: t % 4 === 0 ? 1 + below(5) : 0,
      });
      const file = path.join(dir, `random-${t}.dcm`);
      const padded = new Uint8Array(stream.length + (stream.length % 2));
      padded.set(stream);
      const bits = precision === 12 ? { BitsAllocated: 16, BitsStored: 12, HighBit: 11 } : {};
      await writeSynthetic(
        file,
        {
          Rows: rows,
          Columns: columns,
          PixelRepresentation: 0,
          BitsAllocated: 8,
          BitsStored: 8,
          HighBit: 7,
          ...bits,
        },
        padded,
        '1.2.840.10008.1.2.4.51',
      );
      await assertSameAsDcmdjpeg(file, dir);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('restart intervals: the DC predictor restarts at each RSTn, and a missing marker is an error', () => {
  // 3 × 2 flat blocks (DC only), 24 × 12 pixels (the last block row cut to 4 lines), a restart every 2
  // blocks. With every quantiser 8 the islow IDCT turns a DC coefficient c into the sample c + 2048.
  const dc = [-2048, 2047, 5, -700, 0, 1234];
  const stream = encodeJpeg({
    precision: 12,
    rows: 12,
    columns: 24,
    quant: [8, ...new Array<number>(63).fill(1)],
    blocks: dc.map((value) => ({ dc: value, ac: [] })),
    restartInterval: 2,
  });
  const { samples, precision } = decodeJpegExtended(stream, { rows: 12, columns: 24 });
  assert.equal(precision, 12);
  for (let y = 0; y < 12; y++) {
    for (let x = 0; x < 24; x++) {
      const block = Math.floor(y / 8) * 3 + Math.floor(x / 8);
      assert.equal(samples[y * 24 + x], dc[block]! + 2048, `pixel ${x},${y}`);
    }
  }
  // The same stream with its first RST marker overwritten: refused, not decoded with a stale predictor.
  const broken = stream.slice();
  const rst = broken.findIndex((b, i) => b === 0xff && broken[i + 1] === 0xd0);
  broken[rst + 1] = 0x00;
  assert.throws(
    () => decodeJpegExtended(broken, { rows: 12, columns: 24 }),
    (err: unknown) => err instanceof JpegDataError && /restart marker|ends early|corrupt/.test(err.message),
  );
});
