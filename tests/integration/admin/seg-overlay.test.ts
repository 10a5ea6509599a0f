// The segmentation overlay behind the console's study page, against real Redis: the reports stage writes
// an SR and a SEG for a brain-model result over real MR slices into the outbox, and the API draws the
// SEG's mask over the source slice with the largest area (a PNG, and its caption's facts as JSON), only
// for users with the PHI permission (each view audited), with a clear 404 when there is no SEG to draw.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { createAdminApp, listen } from '../../../src/admin/app.ts';
import { readInstanceHeader } from '../../../src/dicom/part10.ts';
import { destinationSummaries } from '../../../src/delivery/registry.ts';
import { audit } from '../../../src/pipeline/audit-trail.ts';
import { configSchema, type GatewayConfig } from '../../../src/config/schema.ts';
import type { ModelResult, SegmentationResult } from '../../../src/pipeline/findings.ts';
import { createQueues, type Queues } from '../../../src/pipeline/queues.ts';
import { StudyIndex } from '../../../src/pipeline/study-index.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import { writeModelResults } from '../../../src/reports/write-results.ts';
import { instanceKeyOf, mrSlices, sourcesOf } from '../../helpers/dicom-tools.ts';
import { ENHANCED_MR_IMAGE_STORAGE, writeEnhancedFromSlices } from '../../helpers/enhanced-mr.ts';
import { decodeImage } from '../../../src/imaging/decode.ts';
import { display } from '../../../src/imaging/thumbnail.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';
import { rgbPngPixels } from '../../helpers/png.ts';
import type { Server } from 'node:http';

const prefix = `aigw-overlay-${randomBytes(4).toString('hex')}`;
const BRAIN = 'meshnet-brain-gwm';
const USERS = {
  admin: { user: 'lead', password: 'lead-password-1', role: 'admin' },
  viewer: { user: 'itadmin', password: 'itadmin-password-1', role: 'read' },
};
/** Sides of the white-matter square on each of the four slices: the third is the largest. */
const SIDES = [20, 30, 60, 40];

let redis: Redis;
let queues: Queues;
let index: StudyIndex;
let dir: string;
let store: FilesystemObjectStore;
let server: Server;
let base: string;
const mr = sourcesOf(mrSlices(10, 14));
const studyUid = mr[0]!.header.StudyInstanceUID as string;

const auth = (u: { user: string; password: string }) =>
  `Basic ${Buffer.from(`${u.user}:${u.password}`).toString('base64')}`;
const get = (p: string, u = USERS.admin) => fetch(`${base}${p}`, { headers: { authorization: auth(u) } });
const overlay = (model: string, ext: 'png' | 'json', u = USERS.admin) =>
  get(`/api/studies/${studyUid}/segmentations/${model}/overlay.${ext}`, u);

function brainResult(
  sides = SIDES,
  sources = mr.map((x) => x.ref),
): ModelResult & { segmentation: SegmentationResult } {
  const rows = mr[0]!.header.Rows as number;
  const columns = mr[0]!.header.Columns as number;
  const wm = { value: '389080008', scheme: 'SCT', meaning: 'White matter' };
  return {
    model: { id: BRAIN, name: 'MeshNet', version: '1.0.0', manufacturer: 'brainchop', uid: '2.25.77' },
    findings: [{ kind: 'volume', label: 'White matter', concept: wm, volumeMl: 3.2, voxelCount: 5400 }],
    sources,
    provider: 'cpu',
    inferenceMs: 1,
    segmentation: {
      rows,
      columns,
      slices: sides.map((side) => {
        const map = new Uint8Array(rows * columns);
        for (let r = 80; r < 80 + side; r++) for (let c = 90; c < 90 + side; c++) map[r * columns + c] = 1;
        return map;
      }),
      segments: [{ labelValue: 1, label: 'White matter', concept: wm }],
    },
  };
}

/** Stores and indexes these images as ingest would (the bytes under their key, their headers). */
async function recordInstances(
  refs: { file: string; key: string; seriesUid: string; sopInstanceUid: string; sopClassUid: string }[],
) {
  for (const ref of refs) {
    await store.put(ref.key, await readFile(ref.file));
    const header = await readInstanceHeader(ref.file);
    await index.recordInstance({
      ...header,
      studyUid,
      seriesUid: ref.seriesUid,
      sopInstanceUid: ref.sopInstanceUid,
      sopClassUid: ref.sopClassUid,
      transferSyntaxUid: header.transferSyntaxUid ?? '1.2.840.10008.1.2.1',
      size: 1,
      callingAe: 'MR1',
      callingAddress: '127.0.0.1',
      receivedAt: Date.now(),
    });
  }
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-overlay-'));
  store = new FilesystemObjectStore(dir);
  await store.init();
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  index = new StudyIndex(redis, prefix);
  const config: GatewayConfig = configSchema.parse({
    redis: { url: REDIS_URL, prefix, autoStart: false },
    dataDir: dir,
    http: { auth: { basic: Object.values(USERS) } },
  });
  queues = createQueues(redis, config);
  await audit.open({ dir: path.join(dir, 'audit'), retentionDays: 30, redis, prefix });
  await recordInstances(mr.map((x) => x.ref));
  // The reports stage, as a worker runs it: SR and SEG into <dataDir>/outbox, the findings recorded.
  const written = await writeModelResults({
    result: brainResult(),
    studyUid,
    modelId: BRAIN,
    modelVersion: '1.0.0',
    run: 1,
    index,
    store,
  });
  assert.deepEqual(
    written.map((w) => w.kind),
    ['sr', 'seg'],
  );
  const app = createAdminApp({
    config,
    redis,
    index,
    queues,
    spoolDir: dir,
    store,
    destinations: destinationSummaries(config),
  });
  server = await listen(app, '127.0.0.1', 0);
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

after(async () => {
  await new Promise((r) => server?.close(r));
  await audit.close();
  await queues.close();
  const all = await redis.keys(`${prefix}:*`);
  if (all.length) await redis.del(...all);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
});

test('the SEG written by the reports stage, drawn over its largest slice, for a user with PHI rights', async () => {
  const study = (await (await get(`/api/studies/${studyUid}`)).json()) as {
    findings: { model: string; segUid?: string }[];
  };
  const segUid = study.findings.find((f) => f.model === BRAIN)?.segUid;
  assert.ok(segUid, 'the findings name the SEG');

  const res = await overlay(BRAIN, 'json');
  assert.equal(res.status, 200);
  const facts = (await res.json()) as Record<string, unknown>;
  // The slice's place among the series' instances in instance number order.
  const numbers = mr.map((x) => Number(x.header.InstanceNumber));
  const expectedSlice = [...numbers].sort((a, b) => a - b).indexOf(numbers[2]!) + 1;
  assert.deepEqual(facts, {
    model: BRAIN,
    segUid,
    sourceSopInstanceUid: mr[2]!.ref.sopInstanceUid,
    sourceFrame: 1,
    slice: expectedSlice,
    slices: 4,
    area: 60 * 60,
    rows: 256,
    columns: 256,
    segments: [{ number: 1, label: 'White matter', colour: [255, 48, 48], area: 3600 }],
  });

  const png = await overlay(BRAIN, 'png');
  assert.equal(png.status, 200);
  assert.equal(png.headers.get('content-type'), 'image/png');
  const { width, height, rgb } = rgbPngPixels(Buffer.from(await png.arrayBuffer()));
  assert.deepEqual([width, height], [256, 256]);
  // Mask-coloured pixels: exactly the 60×60 square (red over the grey MR), nothing coloured elsewhere.
  let red = 0;
  let other = 0;
  for (let p = 0; p < width * height; p++) {
    const [r, g, b] = [rgb[p * 3]!, rgb[p * 3 + 1]!, rgb[p * 3 + 2]!];
    const y = Math.floor(p / width);
    const x = p % width;
    const inside = y >= 80 && y < 140 && x >= 90 && x < 150;
    if (r - g > 60 && r - b > 60) {
      assert.ok(inside, `coloured pixel at ${x},${y}`);
      red++;
    } else if (r !== g || g !== b) other++;
  }
  assert.equal(red, 3600);
  assert.equal(other, 0);

  // Each view is audited with its viewer.
  const views = (await audit.query({ studyUid })).filter(
    (a) => a.type === 'action' && a.action === 'view-phi',
  ) as { actor?: string; target?: string }[];
  assert.ok(views.some((v) => v.actor === 'lead' && v.target === `segmentation overlay ${studyUid}`));
});

test('refused without the PHI permission; a clear 404 when there is no SEG to draw', async () => {
  for (const ext of ['png', 'json'] as const) {
    const res = await overlay(BRAIN, ext, USERS.viewer);
    assert.equal(res.status, 403);
    assert.match(((await res.json()) as { error: string }).error, /PHI permission/);
  }
  const notFound = async (model: string, reason: RegExp) => {
    const res = await overlay(model, 'png');
    assert.equal(res.status, 404, model);
    assert.match(((await res.json()) as { error: string }).error, reason);
  };
  await notFound('squeezenet1_1-cxr-pneumonia', /no report of squeezenet1_1-cxr-pneumonia/);
  // A report without a SEG (a classifier's, or a segmentation with nothing present).
  await index.setReportFindings(studyUid, {
    model: 'image-uniformity',
    version: '1',
    run: 1,
    srUid: '2.25.9001',
    rows: [],
    positive: false,
  });
  await notFound('image-uniformity', /no SEG in image-uniformity's current report/);
  // A SEG the outbox no longer keeps (retention removed it after delivery).
  await index.setReportFindings(studyUid, {
    model: 'retired-seg',
    version: '1',
    run: 1,
    srUid: '2.25.9002',
    segUid: '2.25.9003',
    rows: [],
    positive: false,
  });
  await notFound('retired-seg', /no longer kept/);
  assert.equal((await get(`/api/studies/2.25.1/segmentations/${BRAIN}/overlay.png`)).status, 404);
  assert.equal((await overlay('bad%20model', 'png')).status, 400);
});

test('an Enhanced MR source: the SEG frame names a frame, and that frame is the one drawn', async () => {
  // Four real slices as one multi-frame object; the mask is largest on frame 2.
  const file = path.join(dir, 'enhanced.dcm');
  const header = await writeEnhancedFromSlices(mrSlices(20, 24), file, {
    sopInstanceUid: '2.25.880001',
    seriesInstanceUid: '2.25.880002',
  });
  const ref = {
    sopClassUid: ENHANCED_MR_IMAGE_STORAGE,
    sopInstanceUid: '2.25.880001',
    seriesUid: '2.25.880002',
    key: instanceKeyOf({
      StudyInstanceUID: studyUid,
      SeriesInstanceUID: '2.25.880002',
      SOPInstanceUID: '2.25.880001',
    }),
    file,
  };
  assert.equal(header.NumberOfFrames, 4);
  await recordInstances([ref]);
  const model = 'brain-enhanced';
  await writeModelResults({
    result: brainResult(
      [20, 60, 30, 40],
      [1, 2, 3, 4].map((frameNumber) => ({ ...ref, frameNumber })),
    ),
    studyUid,
    modelId: model,
    modelVersion: '1.0.0',
    run: 1,
    index,
    store,
  });
  const facts = (await (await overlay(model, 'json')).json()) as Record<string, unknown>;
  assert.equal(facts.sourceSopInstanceUid, ref.sopInstanceUid);
  assert.equal(facts.sourceFrame, 2);
  assert.deepEqual([facts.slice, facts.slices, facts.area], [2, 4, 3600]);
  const { width, rgb } = rgbPngPixels(Buffer.from(await (await overlay(model, 'png')).arrayBuffer()));
  // Outside the mask the overlay is frame 2 windowed, pixel for pixel (not frame 1).
  const image = await decodeImage(file, { frames: 'all' });
  const frame2 = display(image, 1).data;
  const frame1 = display(image, 0).data;
  let same2 = 0;
  let same1 = 0;
  let outside = 0;
  for (let p = 0; p < width * width; p++) {
    const y = Math.floor(p / width);
    const x = p % width;
    if (y >= 80 && y < 140 && x >= 90 && x < 150) continue;
    outside++;
    if (rgb[p * 3] === frame2[p]) same2++;
    if (rgb[p * 3] === frame1[p]) same1++;
  }
  assert.equal(same2, outside);
  assert.ok(same1 < outside, 'frame 1 differs');
});
