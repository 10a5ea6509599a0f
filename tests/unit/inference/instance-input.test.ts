import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { InstanceManifest } from '../../../src/models/manifest.ts';
import { decodeImage, DecodeError } from '../../../src/imaging/decode.ts';
import { instanceInput } from '../../../src/inference/instance-input.ts';
import { withNativeGreyFrame } from '../../../src/imaging/native-frame.ts';
import { preprocess, preprocessGreyFrame } from '../../../src/inference/preprocess.ts';
import { SAMPLES } from '../../helpers/ingest.ts';
import { writeSynthetic } from '../../helpers/synthetic-dicom.ts';
import chest from '../../../models/squeezenet1_1-cxr-pneumonia/model.json' with { type: 'json' };

// The fast path (native-frame.ts + preprocessGreyFrame) must give exactly the general path's sample
// (decode.ts + preprocess), which the dcmtk comparisons in decode.test.ts vouch for.

const base = chest as unknown as InstanceManifest;
const SPECS: [string, InstanceManifest][] = [
  ['chest model (file window, 3 channels, 224²)', base],
  ['min/max window', { ...base, preprocessing: { ...base.preprocessing, window: 'minmax' } }],
  [
    'fixed window, 1 channel, 97×300 (up- and down-sampling)',
    {
      ...base,
      input: { ...base.input, channels: 1, height: 97, width: 300 },
      preprocessing: { ...base.preprocessing, window: { center: 100, width: 301 }, mean: [0.5], std: [0.25] },
    },
  ],
  ['no modality LUT', { ...base, preprocessing: { ...base.preprocessing, modalityLut: false } }],
];

function fastSample(file: string, m: InstanceManifest): Float32Array | undefined {
  return withNativeGreyFrame(file, (frame) => preprocessGreyFrame(frame, m, m.preprocessing.modalityLut));
}

async function generalSample(file: string, m: InstanceManifest): Promise<Float32Array> {
  const image = await decodeImage(file, { frames: 'first', modalityLut: m.preprocessing.modalityLut });
  return preprocess(image, m);
}

function assertSame(fast: Float32Array, general: Float32Array, what: string): void {
  assert.equal(fast.length, general.length, what);
  for (let i = 0; i < fast.length; i++) {
    if (fast[i] !== general[i])
      assert.fail(`${what}: value ${i} is ${fast[i]}, the general path has ${general[i]}`);
  }
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const p = path.join(dir, name);
    if ((await stat(p)).isDirectory()) out.push(...(await walk(p)));
    else if (name.endsWith('.dcm')) out.push(p);
  }
  return out;
}

test('fast path equals the general path bit for bit on every sample it takes', async () => {
  const taken = new Set<string>();
  for (const file of await walk(SAMPLES)) {
    for (const [name, m] of SPECS) {
      const fast = fastSample(file, m);
      if (!fast) continue;
      taken.add(path.relative(SAMPLES, file));
      assertSame(fast, await generalSample(file, m), `${path.relative(SAMPLES, file)}, ${name}`);
    }
  }
  // Not vacuous: the CT and MR series, the MONOCHROME1 radiographs, the uncompressed same-CT copies.
  assert.ok(taken.size >= 60, `only ${taken.size} samples took the fast path`);
  for (const expected of [
    'xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm',
    'compressed/same-ct-image/ct_1.2.840.10008.1.2_implicit-vr-le.dcm',
    'mr/siemens-prisma-t1-sag-series/0001.dcm',
  ]) {
    assert.ok(taken.has(expected), `${expected} did not take the fast path`);
  }
});

test('fast path: a sample written into a recycled array is the same sample', async () => {
  const files = [
    'ct-series/philips-ingenuity-head-phantom-5mm/I10.dcm',
    'xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm',
  ].map((f) => path.join(SAMPLES, f));
  const used = new Float32Array(3 * 224 * 224).fill(Number.NaN); // what an earlier sample left behind
  for (const file of files) {
    const fresh = await instanceInput(file, base);
    const reused = await instanceInput(file, base, (n) => (n === used.length ? used : new Float32Array(n)));
    assert.ok('sample' in fresh && 'sample' in reused);
    assert.equal(reused.sample, used);
    assertSame(reused.sample, fresh.sample, path.basename(file));
  }
  await assert.rejects(
    instanceInput(files[0]!, base, () => new Float32Array(10)),
    /the sample needs 150528 values/,
  );
});

test('fast path: masking, sign, MONOCHROME1, 8 bits, implicit VR and tiny images match the general path', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'fast-path-'));
  try {
    const file = path.join(dir, 'synthetic.dcm');
    // 12 bits stored in 16 with garbage in the top nibble; rescale 2/-5.
    const words = Uint16Array.from({ length: 5 * 3 }, (_, i) => 0xf000 | ((i * 997) % 4096));
    const cases: [string, Record<string, unknown>, Uint16Array | Uint8Array, string?][] = [
      ['unsigned 12/16', { Rows: 3, Columns: 5, BitsStored: 12, HighBit: 11, PixelRepresentation: 0 }, words],
      [
        'signed 12/16 with rescale',
        {
          Rows: 3,
          Columns: 5,
          BitsStored: 12,
          HighBit: 11,
          PixelRepresentation: 1,
          RescaleSlope: '2',
          RescaleIntercept: '-5',
        },
        words,
      ],
      [
        'MONOCHROME1 with a file window',
        {
          Rows: 5,
          Columns: 3,
          BitsStored: 12,
          HighBit: 11,
          PixelRepresentation: 0,
          PhotometricInterpretation: 'MONOCHROME1',
          WindowCenter: '1500',
          WindowWidth: '2000',
        },
        words,
      ],
      [
        '8 bits allocated',
        { Rows: 3, Columns: 5, BitsAllocated: 8, BitsStored: 8, HighBit: 7, PixelRepresentation: 0 },
        Uint8Array.from({ length: 16 }, (_, i) => (i * 37) % 256),
      ],
      [
        'implicit VR little endian',
        { Rows: 3, Columns: 5, BitsStored: 16, HighBit: 15, PixelRepresentation: 1 },
        words,
        '1.2.840.10008.1.2',
      ],
    ];
    for (const [name, attrs, pixels, ts] of cases) {
      await writeSynthetic(file, attrs, pixels, ts);
      for (const [specName, m] of SPECS) {
        const fast = fastSample(file, m);
        assert.ok(fast, `${name}: the fast path declined`);
        assertSame(fast, await generalSample(file, m), `${name}, ${specName}`);
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('fast path declines what it does not handle; errors still come from the general decoder', async () => {
  for (const name of [
    'compressed/same-ct-image/ct_1.2.840.10008.1.2.4.90_jpeg2000-lossless.dcm',
    'compressed/vendor/mr-wg04-downsized_1.2.840.10008.1.2.2_big-endian.dcm',
    'compressed/vendor/sc-dclunie-image_dfl_1.2.840.10008.1.2.1.99_deflated.dcm',
    'multiframe/enhanced-ct-nema-2frames-CT0012.dcm',
    'malformed/truncated-pixeldata-MR_truncated.dcm',
    'malformed/no-pixeldata-cr-canon.dcm',
    'malformed/oversized-dimensions-46341x46341.dcm',
  ]) {
    assert.equal(fastSample(path.join(SAMPLES, name), base), undefined, name);
  }
  await assert.rejects(
    instanceInput(path.join(SAMPLES, 'malformed/truncated-pixeldata-MR_truncated.dcm'), base),
    (err: unknown) => err instanceof DecodeError && /Pixel Data is truncated/.test(err.message),
  );
  // A rejected image says why, on either path.
  const tiny = await instanceInput(path.join(SAMPLES, 'xray/cr-cervical-lat-mono1-agfa-16x16.dcm'), base);
  assert.deepEqual(tiny, { rejected: '16×16 is smaller than 128×128' });
});

/** Inserts an element just before Pixel Data (explicit VR little endian): `value` may have odd length. */
function insertBeforePixelData(file: Buffer, vr: string, value: string): Buffer {
  const at = file.lastIndexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]));
  const header = Buffer.alloc(8);
  header.writeUInt16LE(0x0029, 0); // private group, below (7FE0,0010)
  header.writeUInt16LE(0x0010, 2);
  header.write(vr, 4, 'latin1');
  header.writeUInt16LE(value.length, 6);
  return Buffer.concat([file.subarray(0, at), header, Buffer.from(value, 'latin1'), file.subarray(at)]);
}

test('odd files: the fast path gives the general path’s outcome or stands aside', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'fast-path-odd-'));
  try {
    const file = path.join(dir, 'odd.dcm');
    const words = Uint16Array.from({ length: 128 * 128 }, (_, i) => (i * 37) % 4096);
    const attrs = { Rows: 128, Columns: 128, BitsStored: 12, HighBit: 11, PixelRepresentation: 0 };
    const outcome = async (m: InstanceManifest) => {
      try {
        return await instanceInput(file, m);
      } catch (err) {
        return err instanceof DecodeError ? `DecodeError: ${err.message}` : err;
      }
    };
    const general = async (m: InstanceManifest) => {
      try {
        const image = await decodeImage(file, { frames: 'first', modalityLut: m.preprocessing.modalityLut });
        return { sample: preprocess(image, m) };
      } catch (err) {
        return err instanceof DecodeError ? `DecodeError: ${err.message}` : err;
      }
    };
    const cases: [string, (b: Buffer) => Buffer][] = [
      // Pixel Data at an odd offset (a 3-byte private value before it): a typed view needs a copy.
      ['odd Pixel Data offset', (b) => insertBeforePixelData(b, 'LO', 'abc')],
      // Values dcmjs cleans up its own way: the fast path must not read them differently.
      [
        'NUL-padded photometric',
        (b) => Buffer.from(b.toString('latin1').replace('MONOCHROME2 ', 'MONOCHROME2\0'), 'latin1'),
      ],
      [
        'window centre with letters',
        (b) => Buffer.from(b.toString('latin1').replace('1500', '15ab'), 'latin1'),
      ],
    ];
    for (const [name, edit] of cases) {
      await writeSynthetic(file, { ...attrs, WindowCenter: '1500', WindowWidth: '2000' }, words);
      await writeFile(file, edit(await readFile(file)));
      for (const [specName, m] of SPECS) {
        assert.deepEqual(await outcome(m), await general(m), `${name}, ${specName}`);
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
