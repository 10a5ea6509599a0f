import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Queue, QueueEvents, Worker } from 'bullmq';
import dcmjs from 'dcmjs';
import { Redis } from 'ioredis';
import { configSchema } from '../../../src/config/schema.ts';
import { readInstanceHeader } from '../../../src/dicom/part10.ts';
import { parseManifest, type ModelManifest } from '../../../src/models/manifest.ts';
import { QUEUE, type InferenceJob, type StudyCompleteJob } from '../../../src/pipeline/jobs.ts';
import { InferenceQueues } from '../../../src/pipeline/queues.ts';
import { StudyIndex, type InstanceRecord } from '../../../src/pipeline/study-index.ts';
import { createRoutingProcessor } from '../../../src/routing/processor.ts';
import { REDIS_URL, REPO, SHARED } from '../../helpers/gateway.ts';

// Real chest radiographs, changed at test time the way hospital traffic changes them (Body Part Examined
// empty, THORAX, torax, PA CHEST, removed in favour of an Anatomic Region Sequence or a Series
// Description, or nothing at all), read back with the gateway's own header reader, indexed in a real
// StudyIndex on Redis and routed by the routing processor inside a BullMQ worker: each must reach the
// chest model's inference job; a knee and a real extremity radiograph must not.

const XRAY = path.join(SHARED, 'dicom-samples', 'xray');
const FUJI_CHEST = path.join(XRAY, 'cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
/** Philips chest PA: Body Part Examined CHEST, Study Description THORAX. */
const PHILIPS_CHEST = path.join(XRAY, 'cr-chest-pa-mono1-philips-wg04-RG1-j2k-lossy.dcm');
const EXTREMITY = path.join(XRAY, 'cr-extremity-mono1-fuji-wg04-RG3-j2k-lossless.dcm');
const CXR = 'squeezenet1_1-cxr-pneumonia';

const prefix = `test-routing-anatomy-${process.pid}-${Date.now()}`;
let redis: Redis;
let dir: string;
let index: StudyIndex;
let studyComplete: Queue<StudyCompleteJob>;
let inference: InferenceQueues;
let events: QueueEvents;
let worker: Worker<StudyCompleteJob>;
const connections: Redis[] = [];
let counter = 0;

function connection(): Redis {
  const c = redis.duplicate();
  connections.push(c);
  return c;
}

async function manifest(folder: string): Promise<ModelManifest> {
  const file = path.join(REPO, 'models', folder, 'model.json');
  return parseManifest(file, JSON.parse(await readFile(file, 'utf8')));
}

before(async () => {
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  dir = await mkdtemp(path.join(tmpdir(), 'routing-anatomy-'));
  index = new StudyIndex(redis, prefix);
  studyComplete = new Queue(QUEUE.studyComplete, { connection: redis, prefix });
  inference = new InferenceQueues(redis, prefix);
  events = new QueueEvents(QUEUE.studyComplete, { connection: connection(), prefix });
  await events.waitUntilReady();
  const models = [await manifest(CXR), await manifest('image-uniformity')];
  const config = configSchema.parse({
    routing: {
      rules: [
        // From the emergency room's CR, an image that names no body part is a chest.
        {
          name: 'er-cr-chest',
          match: { callingAE: 'ER_CR', Modality: 'CR' },
          assume: { bodyPart: 'CHEST' },
          models: ['*'],
        },
        { name: 'everything', models: ['*'] },
      ],
    },
  });
  worker = new Worker(
    QUEUE.studyComplete,
    createRoutingProcessor({
      index,
      inferenceQueues: inference,
      models: async () => models,
      rules: config.routing.rules,
      defaultDestination: 'local-folder',
      anatomyKeywords: config.routing.anatomyKeywords,
    }),
    { connection: connection(), prefix },
  );
});

after(async () => {
  await worker?.close();
  await events?.close();
  for (const q of [studyComplete, ...((await inference?.known()) ?? [])]) {
    await q?.obliterate({ force: true }).catch(() => undefined);
    await q?.close();
  }
  const leftover = await redis.keys(`${prefix}:*`);
  if (leftover.length) await redis.del(...leftover);
  for (const c of connections) c.disconnect();
  redis?.disconnect();
  await rm(dir, { recursive: true, force: true });
});

type Dict = Record<string, { vr: string; Value?: unknown[] } | undefined>;

/**
 * A copy of a real file with fresh UIDs and `edit` applied to its data set (dcmjs, element level, so
 * everything else, pixel data included, is written back as it was read).
 */
async function derive(source: string, edit: (dict: Dict) => void): Promise<string> {
  const bytes = await readFile(source);
  const message = dcmjs.data.DicomMessage.readFile(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length),
  );
  const n = ++counter;
  const studyUid = `2.25.${process.pid}${Date.now() % 1_000_000}${n}`;
  const dict = message.dict as Dict;
  dict['0020000D'] = { vr: 'UI', Value: [studyUid] };
  dict['0020000E'] = { vr: 'UI', Value: [`${studyUid}.1`] };
  dict['00080018'] = { vr: 'UI', Value: [`${studyUid}.1.1`] };
  (message.meta as Dict)['00020003'] = { vr: 'UI', Value: [`${studyUid}.1.1`] };
  edit(dict);
  const file = path.join(dir, `variant-${n}.dcm`);
  // The Fuji file carries ACR-NEMA style dates (1995.07.20): written back as they were read.
  await writeFile(file, Buffer.from(message.write({ allowInvalidVRLength: true })));
  return file;
}

interface Routed {
  studyUid: string;
  seriesUid: string;
  models: string[];
  series: InferenceJob['seriesUids'];
  anatomy: Awaited<ReturnType<StudyIndex['seriesRouting']>>;
}

/** Indexes the file as received from `callingAe` and routes its study as the gateway would. */
async function route(file: string, callingAe: string): Promise<Routed> {
  const header = await readInstanceHeader(file);
  const rec: InstanceRecord = {
    ...header,
    studyUid: header.studyUid!,
    seriesUid: header.seriesUid!,
    sopInstanceUid: header.sopInstanceUid!,
    sopClassUid: header.sopClassUid!,
    transferSyntaxUid: header.transferSyntaxUid!,
    size: (await stat(file)).size,
    callingAe,
    callingAddress: '127.0.0.1',
    receivedAt: Date.now(),
  };
  await index.recordInstance(rec);
  const job = await studyComplete.add('study-complete', { studyUid: rec.studyUid });
  const result = (await job.waitUntilFinished(events, 30_000)) as { run: number; jobs: string[] };
  // Each job is in its model's queue (the id names the model: infer|study|model@version|run).
  const jobs = await Promise.all(
    result.jobs.map((id) => {
      const [modelId, version] = id.split('|')[2]!.split('@') as [string, string];
      return inference.forModel(modelId, version).getJob(id);
    }),
  );
  const cxrJob = jobs.find((j) => j?.data.modelId === CXR);
  return {
    studyUid: rec.studyUid,
    seriesUid: rec.seriesUid,
    models: jobs.map((j) => j!.data.modelId).sort(),
    series: cxrJob?.data.seriesUids ?? [],
    anatomy: await index.seriesRouting(rec.studyUid),
  };
}

const setString = (tag: string, vr: string, value: string) => (d: Dict) => {
  d[tag] = { vr, Value: [value] };
};
const remove = (tag: string) => (d: Dict) => {
  delete d[tag];
};
const BPE = '00180015';

const cases: {
  name: string;
  source: string;
  edit: (d: Dict) => void;
  ae: string;
  chest: boolean;
  bodyPart?: string;
  source_: string;
}[] = [
  {
    name: 'unchanged (CHEST)',
    source: FUJI_CHEST,
    edit: () => {},
    ae: 'WARD',
    chest: true,
    bodyPart: 'CHEST',
    source_: 'bodyPartExamined',
  },
  {
    name: "Body Part Examined '' (Study Description THORAX)",
    source: PHILIPS_CHEST,
    edit: setString(BPE, 'CS', ''),
    ae: 'WARD',
    chest: true,
    bodyPart: 'CHEST',
    source_: 'keyword:THORAX',
  },
  {
    name: 'THORAX',
    source: FUJI_CHEST,
    edit: setString(BPE, 'CS', 'THORAX'),
    ae: 'WARD',
    chest: true,
    bodyPart: 'CHEST',
    source_: 'bodyPartExamined',
  },
  {
    name: 'torax',
    source: FUJI_CHEST,
    edit: setString(BPE, 'CS', 'torax'),
    ae: 'WARD',
    chest: true,
    bodyPart: 'CHEST',
    source_: 'bodyPartExamined',
  },
  {
    name: 'PA CHEST',
    source: FUJI_CHEST,
    edit: setString(BPE, 'CS', 'PA CHEST'),
    ae: 'WARD',
    chest: true,
    bodyPart: 'CHEST',
    source_: 'bodyPartExamined',
  },
  {
    name: 'no Body Part Examined, Anatomic Region Sequence chest',
    source: FUJI_CHEST,
    edit: (d) => {
      delete d[BPE];
      d['00082218'] = {
        vr: 'SQ',
        Value: [
          {
            '00080100': { vr: 'SH', Value: ['T-D3000'] },
            '00080102': { vr: 'SH', Value: ['SRT'] },
            '00080104': { vr: 'LO', Value: ['Chest'] },
          },
        ],
      };
    },
    ae: 'WARD',
    chest: true,
    bodyPart: 'CHEST',
    source_: 'anatomicRegion',
  },
  {
    name: "no Body Part Examined, Series Description 'CHEST PA'",
    source: FUJI_CHEST,
    edit: (d) => {
      delete d[BPE];
      d['0008103E'] = { vr: 'LO', Value: ['CHEST PA'] };
    },
    ae: 'WARD',
    chest: true,
    bodyPart: 'CHEST',
    source_: 'keyword:CHEST',
  },
  {
    name: 'nothing, from ER_CR',
    source: FUJI_CHEST,
    edit: remove(BPE),
    ae: 'ER_CR',
    chest: true,
    bodyPart: 'CHEST',
    source_: 'rule-assumed',
  },
  {
    name: 'nothing, from WARD',
    source: FUJI_CHEST,
    edit: remove(BPE),
    ae: 'WARD',
    chest: false,
    source_: 'none',
  },
  {
    name: 'KNEE, from ER_CR',
    source: FUJI_CHEST,
    edit: setString(BPE, 'CS', 'KNEE'),
    ae: 'ER_CR',
    chest: false,
    bodyPart: 'KNEE',
    source_: 'bodyPartExamined',
  },
  {
    name: 'real extremity, from ER_CR',
    source: EXTREMITY,
    edit: () => {},
    ae: 'ER_CR',
    chest: false,
    bodyPart: 'EXTREMITY',
    source_: 'bodyPartExamined',
  },
];

test('chest radiographs reach the chest model however they name the chest; a knee does not', async () => {
  const failures: string[] = [];
  for (const c of cases) {
    const routed = await route(await derive(c.source, c.edit), c.ae);
    // Every CR goes to the uniformity model, so routing ran whatever happened to the chest model.
    assert.ok(
      routed.models.includes('image-uniformity'),
      `${c.name}: routed at all (${routed.models.join(',')})`,
    );
    const reachedChest = routed.models.includes(CXR) && routed.series.includes(routed.seriesUid);
    if (reachedChest !== c.chest)
      failures.push(`${c.name}: chest model ${reachedChest ? 'ran' : 'did not run'}`);
    else {
      assert.equal(routed.anatomy.length, 1, c.name);
      const [record] = routed.anatomy;
      assert.equal(record!.seriesUid, routed.seriesUid);
      assert.equal(record!.bodyPart, c.bodyPart, c.name);
      assert.equal(record!.source, c.source_, c.name);
    }
  }
  assert.deepEqual(failures, []);
});

test('the header reader extracts the Anatomic Region Sequence and Protocol Name, bounded', async () => {
  const long = 'X'.repeat(200);
  const file = await derive(FUJI_CHEST, (d) => {
    d['00181030'] = { vr: 'LO', Value: ['Thorax PA'] };
    d['00082218'] = {
      vr: 'SQ',
      Value: [
        {
          '00080100': { vr: 'SH', Value: [long] },
          '00080102': { vr: 'SH', Value: ['SCT'] },
          '00080104': { vr: 'LO', Value: [long] },
        },
        { '00080100': { vr: 'SH', Value: ['43799004'] } },
      ],
    };
  });
  const header = await readInstanceHeader(file);
  assert.equal(header.protocolName, 'Thorax PA');
  assert.deepEqual(header.anatomicRegion, { value: 'X'.repeat(16), scheme: 'SCT', meaning: 'X'.repeat(64) });
  // An empty item or a sequence with no code at all is no region.
  const empty = await readInstanceHeader(
    await derive(FUJI_CHEST, (d) => (d['00082218'] = { vr: 'SQ', Value: [{}] })),
  );
  assert.equal(empty.anatomicRegion, undefined);
  // Enhanced multi-frame objects keep it in the shared Frame Anatomy.
  const shared = await readInstanceHeader(
    await derive(FUJI_CHEST, (d) => {
      d['52009229'] = {
        vr: 'SQ',
        Value: [
          {
            '00209071': {
              vr: 'SQ',
              Value: [
                {
                  '00209072': { vr: 'CS', Value: ['U'] },
                  '00082218': {
                    vr: 'SQ',
                    Value: [
                      {
                        '00080100': { vr: 'SH', Value: ['43799004'] },
                        '00080102': { vr: 'SH', Value: ['SCT'] },
                      },
                    ],
                  },
                },
              ],
            },
          },
        ],
      };
    }),
  );
  assert.deepEqual(shared.anatomicRegion, { value: '43799004', scheme: 'SCT', meaning: undefined });
});
