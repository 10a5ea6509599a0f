import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import dcmjsCodecs from 'dcmjs-codecs';
import { configSchema } from '../../../src/config/schema.ts';
import {
  codecMemoryBytes,
  codecResetCount,
  decodeImage,
  DecodeError,
  DEFAULT_LIMITS,
  limitsForMaxImageBytes,
  readStoredPixels,
  setDecodeLimits,
} from '../../../src/imaging/decode.ts';
import { DecodePool } from '../../../src/inference/runtime/decode-pool.ts';
import { codestreamsOf, writeFragmented } from '../../helpers/fragmented.ts';
import { writeSynthetic } from '../../helpers/synthetic-dicom.ts';

// Decode memory: a small file that declares a huge image is refused from its header, before any
// allocation or codec call; the codec WebAssembly memory (which never shrinks) is dropped after an
// outsized decode, so a worker's resident memory comes back down.

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const samples = path.join(path.resolve(repoRoot, '../shared'), 'dicom-samples');
const sameCt = path.join(samples, 'compressed/same-ct-image');
const RLE = path.join(sameCt, 'ct_1.2.840.10008.1.2.5_rle-lossless.dcm');
const J2K = path.join(sameCt, 'ct_1.2.840.10008.1.2.4.90_jpeg2000-lossless.dcm');
const MiB = 1024 * 1024;

async function withDir<T>(use: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'decode-memory-'));
  try {
    return await use(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('absurd declared dimensions in a small RLE / JPEG 2000 file are refused before allocation', async () => {
  await withDir(async (dir) => {
    const cases: { sample: string; attributes: Record<string, unknown>; limit?: number }[] = [
      // 2 TiB declared: over any cap.
      { sample: RLE, attributes: { Rows: 16384, Columns: 16384, NumberOfFrames: 4096 } },
      { sample: J2K, attributes: { Rows: 16384, Columns: 16384, NumberOfFrames: 4096 } },
      // 1 GiB: the old 1 GiB cap let it through, the 512 MiB default does not.
      { sample: RLE, attributes: { Rows: 16384, Columns: 16384, NumberOfFrames: 2 } },
      // 512 MiB, one frame: within the default, over a worker configured for 64 MiB.
      { sample: J2K, attributes: { Rows: 16384, Columns: 16384 }, limit: 64 * MiB },
    ];
    for (const [i, c] of cases.entries()) {
      const source = await codestreamsOf(c.sample);
      const file = path.join(dir, `absurd-${i}.dcm`);
      await writeFragmented(file, source, { fragments: 1, table: 'none', attributes: c.attributes });
      assert.ok((await readFile(file)).length < 300_000, 'the file itself is small');
      if (c.limit) setDecodeLimits(limitsForMaxImageBytes(c.limit));
      const rssBefore = process.memoryUsage().rss;
      const started = performance.now();
      try {
        await assert.rejects(decodeImage(file, { frames: 'all' }), (err: unknown) => {
          assert.ok(err instanceof DecodeError, String(err));
          assert.match(
            err.message,
            new RegExp(`over the ${c.limit ?? DEFAULT_LIMITS.maxPixelBytes}-byte limit`),
          );
          return true;
        });
      } finally {
        setDecodeLimits({});
      }
      assert.ok(performance.now() - started < 1000, `case ${i} refused quickly`);
      const grown = process.memoryUsage().rss - rssBefore;
      assert.ok(grown < 100 * MiB, `case ${i}: RSS grew ${grown} bytes`);
    }
  });
});

test('worker.maxDecodedImageBytes: 512 MiB by default, and decode threads apply it', async () => {
  const config = configSchema.parse({});
  assert.equal(config.worker.maxDecodedImageBytes, 512 * MiB);
  assert.equal(DEFAULT_LIMITS.maxPixelBytes, config.worker.maxDecodedImageBytes);
  assert.throws(() => configSchema.parse({ worker: { maxDecodedImageBytes: 1000 } }));
  const pool = new DecodePool(1, limitsForMaxImageBytes(MiB / 4));
  try {
    // 512×512×16 bits is 512 KiB: over a quarter MiB in the thread, fine on this thread.
    await assert.rejects(pool.decode(RLE, {}), (err: unknown) => {
      assert.ok(err instanceof DecodeError, String(err));
      assert.match(err.message, /524288 bytes, over the 262144-byte limit/);
      return true;
    });
    assert.equal((await decodeImage(RLE)).rows, 512);
  } finally {
    await pool.close();
  }
});

/** A 4096×4096 CT (the real slice tiled 8×8) encoded RLE by dcmjs-codecs: 32 MiB decoded. */
async function largeRle(dir: string): Promise<{ file: string; tile: Uint8Array }> {
  const tile = (
    await readStoredPixels(await readFile(path.join(sameCt, 'ct_1.2.840.10008.1.2.1_explicit-vr-le.dcm')))
  ).frames[0]!;
  const src = new Uint16Array(tile.slice().buffer);
  const n = 4096;
  const big = new Uint16Array(n * n);
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) big[y * n + x] = src[(y % 512) * 512 + (x % 512)]!;
  const native = path.join(dir, 'large-native.dcm');
  await writeSynthetic(
    native,
    { Rows: n, Columns: n, BitsStored: 16, HighBit: 15, PixelRepresentation: 1 },
    big,
  );
  if (!dcmjsCodecs.NativeCodecs.isInitialized()) await dcmjsCodecs.NativeCodecs.initializeAsync();
  const bytes = await readFile(native);
  const transcoder = new dcmjsCodecs.Transcoder(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
  );
  transcoder.transcode('1.2.840.10008.1.2.5');
  const file = path.join(dir, 'large-rle.dcm');
  await writeFile(file, Buffer.from(transcoder.getDicomPart10()));
  return { file, tile };
}

test('the codec module is dropped after an outsized decode, and decodes again afterwards', async () => {
  await withDir(async (dir) => {
    const { file, tile } = await largeRle(dir);
    const limits = { codecMemoryResetBytes: 16 * MiB };
    const small = await readFile(RLE);
    await readStoredPixels(small, limits);
    const resets = codecResetCount();
    const baseline = codecMemoryBytes();
    assert.ok(baseline > 0, 'the codec module is loaded');
    await readStoredPixels(small, limits);
    assert.equal(codecResetCount(), resets, 'a 512 KiB frame does not reset the codec');
    assert.equal(codecMemoryBytes(), baseline);

    const large = await readStoredPixels(await readFile(file), limits);
    assert.equal(codecResetCount(), resets + 1, 'a 32 MiB frame resets the codec');
    assert.equal(codecMemoryBytes(), 0, 'its WebAssembly memory is let go');
    // The pixels are right: the top-left and bottom-right tiles are the CT slice.
    const rowBytes = 4096 * 2;
    for (const [ty, tx] of [
      [0, 0],
      [7, 7],
    ] as const) {
      for (const y of [0, 100, 511]) {
        const at = (ty * 512 + y) * rowBytes + tx * 512 * 2;
        assert.ok(
          Buffer.from(large.frames[0]!.subarray(at, at + 1024)).equals(
            Buffer.from(tile.subarray(y * 1024, y * 1024 + 1024)),
          ),
        );
      }
    }
    const again = await readStoredPixels(small, limits);
    assert.equal(again.frames[0]!.byteLength, 524_288, 'a fresh codec module decodes');
    assert.ok(codecMemoryBytes() <= baseline, 'and starts from the baseline memory again');
  });
});

test('resetting the codec gives the memory back: lower resident set after large decodes', async () => {
  await withDir(async (dir) => {
    const { file } = await largeRle(dir);
    const run = (mode: 'reset' | 'keep') =>
      JSON.parse(
        execFileSync(
          process.execPath,
          [
            '--expose-gc',
            '--import',
            'tsx',
            path.join(repoRoot, 'tests/helpers/codec-rss.ts'),
            file,
            RLE,
            mode,
          ],
          { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 },
        ),
      ) as { rss: number; baseline: number; resets: number };
    // What the large decodes added to the process's RSS: the rest of what a process holds (tsx, modules)
    // differs from one process to the next by more than the codec's memory once did (206 vs 195 MiB).
    const grown = (r: { rss: number; baseline: number }) => r.rss - r.baseline;
    // Each mode twice, its lower growth kept: a stray allocation only ever adds to it.
    const lower = (
      a: { rss: number; baseline: number; resets: number },
      b: { rss: number; baseline: number; resets: number },
    ) => (grown(a) <= grown(b) ? a : b);
    const kept = lower(run('keep'), run('keep'));
    const reset = lower(run('reset'), run('reset'));
    assert.equal(kept.resets, 0);
    assert.equal(reset.resets, 3);
    // The kept module holds the 32 MiB frame's pages (and more); the reset one does not.
    assert.ok(
      grown(kept) - grown(reset) > 16 * MiB,
      `RSS grew ${Math.round(grown(kept) / MiB)} MiB kept vs ${Math.round(grown(reset) / MiB)} MiB reset`,
    );
  });
});
