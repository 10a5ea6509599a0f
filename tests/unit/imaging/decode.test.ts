import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  decodeImage,
  DecodeError,
  readStoredPixels,
  UnsupportedTransferSyntaxError,
} from '../../../src/imaging/decode.ts';
import { toDisplay } from '../../../src/inference/preprocess.ts';
import { writeSynthetic } from '../../helpers/synthetic-dicom.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const samples = path.join(path.resolve(repoRoot, '../shared'), 'dicom-samples');
const sameCt = path.join(samples, 'compressed/same-ct-image');
const REFERENCE_MD5 = '0aa7fb0355e5f9e0fc2e255a2ba6a031'; // MANIFEST.md: the 524,288 bytes of stored pixel data

const LOSSLESS = [
  'ct_1.2.840.10008.1.2_implicit-vr-le.dcm',
  'ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm',
  'ct_1.2.840.10008.1.2.2_explicit-vr-big-endian.dcm',
  'ct_1.2.840.10008.1.2.1.99_deflated.dcm',
  'ct_1.2.840.10008.1.2.4.57_jpeg-lossless-p14.dcm',
  'ct_1.2.840.10008.1.2.4.70_jpeg-lossless-sv1.dcm',
  'ct_1.2.840.10008.1.2.4.80_jpeg-ls-lossless.dcm',
  'ct_1.2.840.10008.1.2.4.90_jpeg2000-lossless.dcm',
  'ct_1.2.840.10008.1.2.5_rle-lossless.dcm',
];

async function stored(file: string) {
  return readStoredPixels(await readFile(file));
}

function int16(bytes: Uint8Array): Int16Array {
  return new Int16Array(bytes.slice().buffer);
}

test('lossless transfer syntaxes decode to the reference pixels', async () => {
  for (const name of LOSSLESS) {
    const { header, frames } = await stored(path.join(sameCt, name));
    assert.equal(header.rows, 512, name);
    assert.equal(header.columns, 512, name);
    assert.equal(frames.length, 1, name);
    assert.equal(frames[0]!.byteLength, 524_288, name);
    assert.equal(createHash('md5').update(frames[0]!).digest('hex'), REFERENCE_MD5, name);
  }
});

test('lossy transfer syntaxes decode close to the reference', async () => {
  const reference = int16((await stored(path.join(sameCt, LOSSLESS[1]!))).frames[0]!);
  for (const [name, maxError] of [
    ['ct_1.2.840.10008.1.2.4.81_jpeg-ls-near-lossless.dcm', 2],
    ['ct_1.2.840.10008.1.2.4.91_jpeg2000.dcm', 16],
  ] as const) {
    const decoded = int16((await stored(path.join(sameCt, name))).frames[0]!);
    let worst = 0;
    for (let i = 0; i < decoded.length; i++) worst = Math.max(worst, Math.abs(decoded[i]! - reference[i]!));
    assert.ok(worst > 0 && worst <= maxError, `${name}: max error ${worst}`);
  }
  // JPEG baseline holds an 8-bit version of the image: decodable, but not comparable value by value.
  const baseline = await stored(path.join(sameCt, 'ct_1.2.840.10008.1.2.4.50_jpeg-baseline-8bit.dcm'));
  assert.equal(baseline.header.bitsAllocated, 8);
  assert.equal(baseline.frames[0]!.byteLength, 512 * 512);
});

test('a transfer syntax no decoder handles (JPEG progressive) is reported as unsupported, with its UID', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'progressive-'));
  try {
    const progressive = path.join(dir, 'progressive.dcm');
    execFileSync('dcmcjpeg', ['+ep', path.join(sameCt, LOSSLESS[1]!), progressive], { timeout: 60_000 });
    await assert.rejects(decodeImage(progressive), (err: unknown) => {
      assert.ok(err instanceof UnsupportedTransferSyntaxError);
      assert.ok(err instanceof DecodeError);
      assert.equal(err.transferSyntaxUid, '1.2.840.10008.1.2.4.55');
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('decodeImage applies the modality LUT to signed stored values', async () => {
  const file = path.join(sameCt, 'ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm');
  const raw = int16((await stored(file)).frames[0]!);
  const image = await decodeImage(file);
  assert.equal(image.pixelRepresentation, 1);
  assert.equal(image.rescaleSlope, 1);
  assert.equal(image.rescaleIntercept, -1024);
  assert.ok(
    raw.some((v) => v < 0),
    'the reference has negative stored values',
  );
  for (let i = 0; i < raw.length; i++) assert.equal(image.pixels[0]![i], raw[i]! - 1024);
  const noLut = await decodeImage(file, { modalityLut: false });
  assert.equal(noLut.modalityLutApplied, false);
  for (let i = 0; i < raw.length; i += 997) assert.equal(noLut.pixels[0]![i], raw[i]!);
});

test('MONOCHROME1 radiograph: photometric and first window are reported', async () => {
  const image = await decodeImage(path.join(samples, 'xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm'));
  assert.equal(image.photometric, 'MONOCHROME1');
  assert.equal(image.windowCenter, 550);
  assert.equal(image.windowWidth, 1024);
  assert.equal(image.pixels[0]!.length, 440 * 440);
  assert.ok(
    image.pixels[0]!.every((v) => v >= 0 && v < 1024),
    'values within 10 bits stored',
  );
});

test('multi-frame: every frame on request, rescale from the functional groups; RGB cine', async () => {
  const ct = await decodeImage(path.join(samples, 'multiframe/enhanced-ct-nema-2frames-CT0012.dcm'), {
    frames: 'all',
  });
  assert.equal(ct.frames, 2);
  assert.equal(ct.pixels.length, 2);
  assert.equal(ct.rescaleIntercept, -1024);
  const first = await decodeImage(path.join(samples, 'multiframe/enhanced-ct-nema-2frames-CT0012.dcm'));
  assert.equal(first.pixels.length, 1);
  assert.deepEqual(first.pixels[0], ct.pixels[0]);
  // Each frame's plane from its own functional group (the NEMA file stores them 10 mm apart, in reverse).
  assert.deepEqual(
    ct.frameGeometries!.map((g) => g?.position),
    [
      [99.5, -301.5, -159],
      [99.5, -301.5, -149],
    ],
  );
  for (const g of ct.frameGeometries!) {
    assert.deepEqual(g!.orientation, [-1, 0, 0, 0, 1, 0]);
    assert.deepEqual(g!.pixelSpacing, [0.388672, 0.388672]);
  }

  const us = await decodeImage(path.join(samples, 'multiframe/us-sonosite-30frames-jpeg-baseline.dcm'));
  assert.equal(us.frames, 30);
  assert.equal(us.samplesPerPixel, 3);
  assert.equal(us.photometric, 'RGB');
  assert.equal(us.pixels[0]!.length, us.rows * us.columns * 3);
});

test('a classic multi-frame image places only its first frame: later frames have no geometry of their own', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'decode-'));
  try {
    const file = path.join(dir, 'classic-multiframe.dcm');
    const plane = {
      ImagePositionPatient: [1, 2, 3],
      ImageOrientationPatient: [1, 0, 0, 0, 1, 0],
      PixelSpacing: [0.5, 0.5],
    };
    await writeSynthetic(file, { Rows: 2, Columns: 2, NumberOfFrames: 3, ...plane }, new Uint16Array(12));
    const image = await decodeImage(file, { frames: 'all' });
    assert.equal(image.pixels.length, 3);
    assert.deepEqual(image.frameGeometries, [
      { position: [1, 2, 3], orientation: [1, 0, 0, 0, 1, 0], pixelSpacing: [0.5, 0.5] },
      undefined,
      undefined,
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('Bits Stored masks unused high bits and signed values are sign-extended', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'decode-'));
  try {
    const file = path.join(dir, 'bits.dcm');
    // 12 bits stored in 16: the top nibble is garbage (0xF) that must not reach the value.
    const pixels = Uint16Array.from([0xf123, 0xf923, 0x0fff, 0x0800]);
    const common = {
      Rows: 2,
      Columns: 2,
      BitsStored: 12,
      HighBit: 11,
      RescaleSlope: '2',
      RescaleIntercept: '-5',
    };
    await writeSynthetic(file, { ...common, PixelRepresentation: 1 }, pixels);
    const signed = await decodeImage(file);
    assert.deepEqual(Array.from(signed.pixels[0]!), [
      0x123 * 2 - 5,
      (0x923 - 4096) * 2 - 5,
      -1 * 2 - 5,
      -2048 * 2 - 5,
    ]);
    await writeSynthetic(file, { ...common, PixelRepresentation: 0 }, pixels);
    const unsigned = await decodeImage(file);
    assert.deepEqual(Array.from(unsigned.pixels[0]!), [
      0x123 * 2 - 5,
      0x923 * 2 - 5,
      0xfff * 2 - 5,
      0x800 * 2 - 5,
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('sizes are checked against limits before anything is allocated', async () => {
  await assert.rejects(
    decodeImage(path.join(samples, 'malformed/oversized-dimensions-46341x46341.dcm')),
    (err: unknown) =>
      err instanceof DecodeError && /Rows 46341 is outside the accepted range/.test(err.message),
  );
  await assert.rejects(
    decodeImage(path.join(samples, 'xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm'), {
      limits: { maxPixelBytes: 100_000 },
    }),
    /440×440×1×1 frames at 16 bits is 387200 bytes, over the 100000-byte limit/,
  );
  await assert.rejects(
    decodeImage(path.join(samples, 'xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm'), {
      limits: { maxSamples: 100_000 },
    }),
    /440×440×1×1 frames is 193600 samples, over the 100000-sample limit/,
  );
  await assert.rejects(
    decodeImage(path.join(samples, 'xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm'), {
      limits: { maxDimension: 256 },
    }),
    /Rows 440 is outside/,
  );
});

test('malformed files throw DecodeError with a reason', async () => {
  const cases: [string, RegExp][] = [
    ['no-pixeldata-cr-canon.dcm', /no Pixel Data/],
    ['no-pixeldata-dx-agfa.dcm', /no Pixel Data/],
    ['no-pixeldata-enhanced-mr-philips.dcm', /no Pixel Data/],
    ['truncated-pixeldata-MR_truncated.dcm', /Pixel Data is truncated/],
    ['no-preamble-no-meta-ct_small.dcm', /not a readable DICOM Part-10 file/],
    ['truncated-mid-element-rtplan.dcm', /not a readable DICOM Part-10 file/],
    ['meta-missing-transfer-syntax.dcm', /DICOM|Transfer Syntax/],
  ];
  for (const [name, reason] of cases) {
    await assert.rejects(decodeImage(path.join(samples, 'malformed', name)), (err: unknown) => {
      assert.ok(err instanceof DecodeError, `${name}: ${String(err)}`);
      assert.match(err.message, reason, name);
      return true;
    });
  }
});

test('a corrupt compressed stream is a DecodeError, not a crash or garbage', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'decode-'));
  try {
    for (const name of [
      'ct_1.2.840.10008.1.2.4.57_jpeg-lossless-p14.dcm',
      'ct_1.2.840.10008.1.2.4.70_jpeg-lossless-sv1.dcm',
    ]) {
      const bytes = await readFile(path.join(sameCt, name));
      const soi = bytes.indexOf(Buffer.from([0xff, 0xd8, 0xff]));
      assert.ok(soi > 0, `${name} has a JPEG start-of-image marker`);
      bytes[soi + 1] = 0x00; // no longer a JPEG stream
      const file = path.join(dir, name);
      await writeFile(file, bytes);
      await assert.rejects(decodeImage(file), (err: unknown) => err instanceof DecodeError, name);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// --- Against an independent decoder: dcmtk (libijg JPEG, CharLS JPEG-LS, its own RLE and VOI LUT code).

const dcmtkTimeout = { timeout: 60_000 };

/** A binary PGM (P5) or PPM (P6) as written by dcmj2pnm/dcml2pnm: 8-bit samples. */
function readPnm(bytes: Buffer): { width: number; height: number; channels: number; data: Uint8Array } {
  const header = bytes.toString('latin1', 0, 64).match(/^(P[56])\s+(\d+)\s+(\d+)\s+(\d+)\s/);
  assert.ok(header, 'a binary PNM header');
  assert.equal(header[4], '255');
  const [width, height] = [Number(header[2]), Number(header[3])];
  const channels = header[1] === 'P6' ? 3 : 1;
  const data = bytes.subarray(header[0].length);
  assert.equal(data.length, width * height * channels);
  return { width, height, channels, data };
}

/** Largest and mean absolute difference between two equally long arrays. */
function difference(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; mean: number } {
  assert.equal(a.length, b.length);
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / a.length };
}

test('display image (modality LUT, file window, MONOCHROME1, colour) matches dcmtk dcmj2pnm/dcml2pnm', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'dcmtk-display-'));
  const cases: { file: string; tool: string; maxDiff: number }[] = [
    // Rescaled signed CT, the file's first window.
    { file: path.join(sameCt, 'ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm'), tool: 'dcmj2pnm', maxDiff: 1 },
    {
      file: path.join(sameCt, 'ct_1.2.840.10008.1.2.4.70_jpeg-lossless-sv1.dcm'),
      tool: 'dcmj2pnm',
      maxDiff: 1,
    },
    {
      file: path.join(sameCt, 'ct_1.2.840.10008.1.2.4.57_jpeg-lossless-p14.dcm'),
      tool: 'dcmj2pnm',
      maxDiff: 1,
    },
    { file: path.join(sameCt, 'ct_1.2.840.10008.1.2.5_rle-lossless.dcm'), tool: 'dcmj2pnm', maxDiff: 1 },
    // 12-bit JPEG Extended: our own decoder against libijg's.
    {
      file: path.join(sameCt, 'ct_1.2.840.10008.1.2.4.51_jpeg-extended-12bit.dcm'),
      tool: 'dcmj2pnm',
      maxDiff: 1,
    },
    {
      file: path.join(sameCt, 'ct_1.2.840.10008.1.2.4.80_jpeg-ls-lossless.dcm'),
      tool: 'dcml2pnm',
      maxDiff: 1,
    },
    // MONOCHROME1 radiograph: displayed inverted by both.
    {
      file: path.join(samples, 'xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm'),
      tool: 'dcmj2pnm',
      maxDiff: 1,
    },
    // 12 bits stored in 16, real MR.
    { file: path.join(samples, 'mr/siemens-prisma-t1-sag-series/0018.dcm'), tool: 'dcmj2pnm', maxDiff: 1 },
    // 8-bit JPEG lossless ultrasound.
    {
      file: path.join(
        samples,
        'compressed/vendor/us-philips_1.2.840.10008.1.2.4.70_jpeg-lossless-sv1-8bit.dcm',
      ),
      tool: 'dcmj2pnm',
      maxDiff: 1,
    },
    // JPEG baseline YBR_FULL_422 ultrasound (frame 1) → RGB: two JPEG decoders may round the IDCT,
    // chroma upsampling and colour conversion differently.
    {
      file: path.join(samples, 'multiframe/us-sonosite-30frames-jpeg-baseline.dcm'),
      tool: 'dcmj2pnm',
      maxDiff: 3,
    },
  ];
  try {
    for (const { file, tool, maxDiff } of cases) {
      const name = path.basename(file);
      const out = path.join(dir, `${name}.pnm`);
      // +Wi 1: first window in the file (as our 'file' window), +op: 8-bit binary PNM.
      const image = await decodeImage(file);
      const windowArgs = image.samplesPerPixel === 1 ? ['+Wi', '1'] : [];
      execFileSync(tool, ['-q', ...windowArgs, '+op', file, out], dcmtkTimeout);
      const theirs = readPnm(await readFile(out));
      assert.deepEqual(
        [theirs.height, theirs.width, theirs.channels],
        [image.rows, image.columns, image.samplesPerPixel],
        name,
      );
      const ours = toDisplay(image, 'file', true);
      const d = difference(ours.data, theirs.data);
      // dcmtk truncates the VOI output to 8 bits where we round to nearest: at most one grey level apart.
      // A wrong rescale, window, sign, inversion or colour conversion is tens of levels off.
      assert.ok(d.max <= maxDiff, `${name}: max ${d.max}, mean ${d.mean.toFixed(4)}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('stored pixels match dcmtk decompression (dcmdjpeg, dcmdjpls, dcmdrle) value for value', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'dcmtk-stored-'));
  const cases: [string, string][] = [
    ['ct_1.2.840.10008.1.2.4.57_jpeg-lossless-p14.dcm', 'dcmdjpeg'],
    ['ct_1.2.840.10008.1.2.4.70_jpeg-lossless-sv1.dcm', 'dcmdjpeg'],
    ['ct_1.2.840.10008.1.2.4.80_jpeg-ls-lossless.dcm', 'dcmdjpls'],
    ['ct_1.2.840.10008.1.2.4.81_jpeg-ls-near-lossless.dcm', 'dcmdjpls'],
    ['ct_1.2.840.10008.1.2.5_rle-lossless.dcm', 'dcmdrle'],
  ];
  try {
    for (const [name, tool] of cases) {
      const out = path.join(dir, name);
      execFileSync(tool, [path.join(sameCt, name), out], dcmtkTimeout);
      const ours = await stored(path.join(sameCt, name));
      const theirs = await stored(out);
      assert.equal(theirs.header.transferSyntaxUid, '1.2.840.10008.1.2.1', `${tool} wrote explicit VR LE`);
      // Even the near-lossless stream must decode identically: JPEG-LS decoding is deterministic.
      assert.deepEqual(int16(ours.frames[0]!), int16(theirs.frames[0]!), name);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
