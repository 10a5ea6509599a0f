// Inference benchmark: images/s through the worker path (decode → preprocess → micro-batch → run, as
// runModel does it for a job) against a bare `session.run` loop over the very same input tensors, both
// measured in this run; then the same at batch 1 to show what batching gains. The paths run in a new
// shuffled order each round and the medians are reported, so that a noisy machine's drift hits all alike.
//
//   npm run bench:inference [-- --model squeezenet1_1-cxr-pneumonia --images 64 --batch 8 --rounds 15
//                               --decode-threads N --intra-op-threads N --provider cpu|cuda]
//
// Images: the real CT series in ../shared/dicom-samples (512×512, explicit VR LE), cycled to --images.
// The chest model's weights are read from ../shared/models; the built-in image-uniformity model is
// used when they are absent or when asked for.

import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import { loadModels, type LoadedModel } from '../../src/models/registry.ts';
import type { InstanceManifest } from '../../src/models/manifest.ts';
import type { SourceInstanceRef } from '../../src/pipeline/findings.ts';
import { seededRandom } from '../../src/util/seeded-random.ts';
import { decodeImage } from '../../src/imaging/decode.ts';
import { instanceInput } from '../../src/inference/instance-input.ts';
import { preprocess } from '../../src/inference/preprocess.ts';
import { openModel, runModel, type LoadedModelSession } from '../../src/inference/run-model.ts';
import { DecodePool, defaultDecodeThreads } from '../../src/inference/runtime/decode-pool.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const shared = path.resolve(repoRoot, '../shared');
const SERIES = path.join(shared, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm');
const CXR = 'squeezenet1_1-cxr-pneumonia';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: CXR },
    images: { type: 'string', default: '64' },
    batch: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '15' },
    'decode-threads': { type: 'string', default: String(defaultDecodeThreads()) },
    'intra-op-threads': { type: 'string' },
    provider: { type: 'string', default: 'cpu' },
  },
});
const imageCount = Number(values.images);
const batch = Number(values.batch);
const rounds = Number(values.rounds);
const decodeThreads = Number(values['decode-threads']);
const intraOpThreads = values['intra-op-threads'] ? Number(values['intra-op-threads']) : undefined;
if (values.provider !== 'cpu' && values.provider !== 'cuda') throw new Error('--provider is cpu or cuda');
const provider: 'cpu' | 'cuda' = values.provider;

/** A models dir holding the wanted model (the chest weights symlinked from ../shared, as an admin would). */
async function modelDir(id: string): Promise<{ dir: string; model: LoadedModel }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'bench-models-'));
  const src = path.join(repoRoot, 'models', id);
  await mkdir(path.join(dir, id));
  const manifest = (await import(path.join(src, 'model.json'), { with: { type: 'json' } })).default;
  await writeFile(path.join(dir, id, 'model.json'), JSON.stringify(manifest));
  const weights =
    id === CXR ? path.join(shared, 'models', CXR, 'squeezenet1_1_cxr.onnx') : path.join(src, manifest.onnx);
  await symlink(weights, path.join(dir, id, manifest.onnx));
  const { models, problems } = await loadModels(dir);
  if (!models[0]) throw new Error(`model ${id} not loadable: ${problems.join('; ')}`);
  return { dir, model: models[0] };
}

function withBatchLimit(model: LoadedModel, limit: number): LoadedModel {
  return { ...model, manifest: { ...model.manifest, batchLimit: limit } };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** The q-quantile (0…1) of values, interpolated between neighbours. */
function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  return sorted[lo]! + (sorted[Math.min(lo + 1, sorted.length - 1)]! - sorted[lo]!) * (at - lo);
}

const median = (values: number[]) => quantile(values, 0.5);

function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * The bare loop: the prepared tensors copied `limit` at a time into one batch buffer, one session.run
 * each, nothing else. The fastest such loop measured here: runs over batches stacked beforehand are
 * ~5 % slower (each reads a 4.8 MB input that is no longer in cache), and a buffer allocated afresh
 * for each pass over the images made it 2–5 % slower than the batcher's kept one, so it is kept too.
 */
const bareBuffers = new Map<number, Float32Array>();
async function bareRun(loaded: LoadedModelSession, tensors: Float32Array[], limit: number): Promise<void> {
  const m = loaded.model.manifest as InstanceManifest;
  const size = tensors[0]!.length;
  let buffer = bareBuffers.get(limit * size);
  if (!buffer) bareBuffers.set(limit * size, (buffer = new Float32Array(limit * size)));
  const output = [m.outputs.name];
  for (let i = 0; i < tensors.length; i += limit) {
    const n = Math.min(limit, tensors.length - i);
    const data = buffer.subarray(0, n * size);
    for (let k = 0; k < n; k++) data.set(tensors[i + k]!, k * size);
    const dims = [n, m.input.channels, m.input.height, m.input.width];
    await loaded.session.run({ [m.input.name]: new ort.Tensor('float32', data, dims) }, output);
  }
}

async function main(): Promise<void> {
  const { dir, model } = await modelDir(values.model!);
  try {
    const m = model.manifest;
    if (m.unit !== 'instance') throw new Error('the benchmark runs instance models');
    const files = (await readdir(SERIES)).filter((f) => f.endsWith('.dcm')).sort();
    const sources: SourceInstanceRef[] = Array.from({ length: imageCount }, (_, i) => ({
      key: `studies/2.25.8/2.25.9/2.25.${i + 1}.dcm`,
      file: path.join(SERIES, files[i % files.length]!),
      sopInstanceUid: `2.25.${i + 1}`,
      sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
      seriesUid: '2.25.9',
    }));
    // The same tensors the worker path makes, prepared once, outside any timing, for the bare loop.
    const tensors: Float32Array[] = [];
    for (const s of sources) {
      tensors.push(preprocess(await decodeImage(s.file, { modalityLut: m.preprocessing.modalityLut }), m));
    }

    // Strict: a CUDA run that fell back to the CPU would measure the wrong thing.
    const runtime = {
      executionProviders: [provider],
      deviceId: 0,
      strict: true,
      ...(intraOpThreads ? { intraOpThreads } : {}),
    };
    // The worker path as a worker runs it: decoding in the decode pool (0 threads: on the main thread).
    const pool = decodeThreads > 0 ? new DecodePool(decodeThreads) : undefined;
    // Decode + preprocess alone, on this thread (fast path where it applies).
    // Into one reused array, as the decode threads write into recycled ones.
    let spare: Float32Array | undefined;
    const reuse = (n: number) => (spare?.length === n ? spare : (spare = new Float32Array(n)));
    const prepare = async () => {
      for (const s of sources) await instanceInput(s.file, m, reuse);
    };
    const random = seededRandom(1);
    const rows: {
      limit: number;
      bare: number;
      batcher: number;
      worker: number;
      overhead: number;
      spread: [number, number];
    }[] = [];
    const prepareMs: number[] = [];
    for (const limit of [batch, 1]) {
      const loaded = await openModel(withBatchLimit(model, limit), runtime, pool);
      try {
        await bareRun(loaded, tensors, limit); // warm every path once
        await runModel(loaded, sources);
        await prepare();
        const bare: number[] = [];
        const batcher: number[] = [];
        const worker: number[] = [];
        const ratio: number[] = [];
        // The same tensors through the micro-batcher from `limit` concurrent lanes: the cost of
        // batching itself (stacking, splitting, scheduling), without decoding.
        const throughBatcher = async () => {
          let next = 0;
          const lane = async () => {
            for (let i = next++; i < tensors.length; i = next++) await loaded.batcher.run(tensors[i]!);
          };
          await Promise.all(Array.from({ length: limit }, lane));
        };
        const paths: { times: number[]; run: () => Promise<unknown> }[] = [
          { times: bare, run: () => bareRun(loaded, tensors, limit) },
          { times: batcher, run: throughBatcher },
          { times: worker, run: () => runModel(loaded, sources) },
          ...(limit === batch ? [{ times: prepareMs, run: prepare }] : []),
        ];
        for (let r = 0; r < rounds; r++) {
          // A new order each round: a path measured right after another kind of work runs measurably
          // slower (cold caches, that work's garbage), so a fixed order, or a rotation (which keeps
          // each path's predecessor), would hand that cost to the same path every round.
          for (const path of shuffled(paths, random)) path.times.push(await timed(path.run));
          ratio.push(worker[r]! / bare[r]!);
        }
        rows.push({
          limit,
          bare: median(bare),
          batcher: median(batcher),
          worker: median(worker),
          overhead: median(ratio) - 1,
          spread: [quantile(ratio, 0.25) - 1, quantile(ratio, 0.75) - 1],
        });
      } finally {
        await loaded.close();
      }
    }

    const ips = (ms: number) => (imageCount / (ms / 1000)).toFixed(1);
    const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
    console.log(
      `model ${m.id}, ${provider.toUpperCase()}, ${imageCount} images (${files.length}-slice CT series, 512×512), ${decodeThreads} decode threads, ${intraOpThreads ?? 'default'} ONNX Runtime threads, median of ${rounds} rounds in shuffled order`,
    );
    console.log(
      'batch | bare session.run img/s | batcher img/s (overhead) | worker path img/s (overhead, paired; quartiles)',
    );
    for (const r of rows) {
      console.log(
        `${String(r.limit).padStart(5)} | ${ips(r.bare).padStart(22)} | ${`${ips(r.batcher)} (${pct(r.batcher / r.bare - 1)})`.padStart(25)} | ${ips(r.worker).padStart(17)} (${pct(r.overhead)}; ${pct(r.spread[0])} … ${pct(r.spread[1])})`,
      );
    }
    const [big, one] = rows;
    const prepPerImage = median(prepareMs) / imageCount;
    const runPerImage = big!.bare / imageCount;
    console.log(
      `decode + preprocess alone: ${prepPerImage.toFixed(2)} ms/img; bare inference at batch ${batch}: ${runPerImage.toFixed(2)} ms/img ` +
        `(the overhead if the two simply added up: ${pct(prepPerImage / runPerImage)})`,
    );
    console.log(
      `batching gain (batch ${batch} vs 1): bare ×${(one!.bare / big!.bare).toFixed(2)}, worker path ×${(one!.worker / big!.worker).toFixed(2)}`,
    );
    const batching = big!.batcher / big!.bare - 1;
    console.log(
      `overhead at batch ${batch} (target ≤ 15 % on CPU): worker path ${pct(big!.overhead)} ${big!.overhead <= 0.15 ? 'MET' : 'NOT MET'}; ` +
        `batching machinery alone ${pct(batching)} ${batching <= 0.15 ? 'MET' : 'NOT MET'}`,
    );
    await pool?.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
