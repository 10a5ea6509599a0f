// The rule tester: `routing explain` (CLI) and POST /api/routing/explain say which models would run on
// DICOM files or a spooled study and, for each series and model that did not match, the criterion that
// failed with the value seen. Nothing is queued.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import {
  makeModelsDir,
  REDIS_URL,
  REPO,
  SHARED,
  startGateway,
  type GatewayProcess,
} from '../../helpers/gateway.ts';

const run = promisify(execFile);
const XRAY = path.join(SHARED, 'dicom-samples/xray');
const CHEST = path.join(XRAY, 'cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const EXTREMITY = path.join(XRAY, 'cr-extremity-mono1-fuji-wg04-RG3-j2k-lossless.dcm');
const CHEST_MODEL = 'squeezenet1_1-cxr-pneumonia@1.0.0';

interface Explanation {
  jobs: { model: string; series: string[] }[];
  series: {
    seriesUid: string;
    bodyPart?: string;
    source: string;
    models: Record<string, { accepted: boolean; reasons: string[] }>;
  }[];
  noModel?: string;
}

let modelsDir: string;
let gateway: GatewayProcess;
before(async () => {
  modelsDir = await makeModelsDir(['cxr']);
  gateway = await startGateway({ modelsDir, config: { study: { quietPeriodMs: 600_000 } } });
});
after(async () => {
  await gateway?.dispose();
  await rm(modelsDir, { recursive: true, force: true });
});

/** The extremity series' decision for the chest model says which criterion failed and what it saw. */
function assertChestRefusesExtremity(e: Explanation): void {
  const extremity = e.series.find((s) => s.bodyPart === 'EXTREMITY');
  assert.ok(extremity, JSON.stringify(e.series));
  const decision = extremity.models[CHEST_MODEL];
  assert.equal(decision?.accepted, false);
  assert.ok(
    decision.reasons.some((r) => r.includes('bodyPart: "EXTREMITY" not in [CHEST]')),
    decision.reasons.join('; '),
  );
}

test('CLI: routing explain over files names the models that would run and why the others would not', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-explain-'));
  after(() => rm(dir, { recursive: true, force: true }));
  const config = path.join(dir, 'gateway.yaml');
  await writeFile(config, stringify({ modelsDir, redis: { url: REDIS_URL, autoStart: false } }));
  const cli = ['--import', 'tsx', path.join(REPO, 'src/cli.ts'), 'routing', 'explain', '--config', config];

  const { stdout } = await run(process.execPath, [...cli, '--json', CHEST, EXTREMITY], { cwd: REPO });
  const e = JSON.parse(stdout) as Explanation;
  assert.deepEqual(
    e.jobs.map((j) => j.model),
    [CHEST_MODEL],
  );
  assert.equal(e.jobs[0]!.series.length, 1, 'only the chest series');
  const chest = e.series.find((s) => s.bodyPart === 'CHEST');
  assert.equal(chest?.models[CHEST_MODEL]?.accepted, true);
  assertChestRefusesExtremity(e);

  // The human form, and a study no model takes.
  const text = await run(process.execPath, [...cli, EXTREMITY], { cwd: REPO });
  assert.match(text.stdout, /No model would run: no model accepts this study/);
  assert.match(text.stdout, /✗ squeezenet1_1-cxr-pneumonia@1\.0\.0: bodyPart: "EXTREMITY" not in \[CHEST\]/);

  // Nothing readable: a clear error and a non-zero exit.
  const notDicom = path.join(dir, 'notes.txt');
  await writeFile(notDicom, 'not DICOM');
  const refused = await run(process.execPath, [...cli, notDicom], { cwd: REPO }).catch(
    (err: { code: number; stderr: string }) => err,
  );
  assert.equal((refused as { code: number }).code, 1);
  assert.match((refused as { stderr: string }).stderr, /no readable DICOM file/);
});

test('API: POST /api/routing/explain for one DICOM file and for a spooled study; bad input is a 4xx', async () => {
  const base = `http://127.0.0.1:${gateway.httpPort}/api/routing/explain`;
  const post = (body: BodyInit, type: string) =>
    fetch(base, { method: 'POST', headers: { 'content-type': type }, body });

  const file = await post(readFileSync(EXTREMITY), 'application/dicom');
  assert.equal(file.status, 200);
  const fromFile = (await file.json()) as Explanation;
  assert.deepEqual(fromFile.jobs, []);
  assert.match(fromFile.noModel ?? '', /bodyPart: "EXTREMITY" not in \[CHEST\]/);
  assertChestRefusesExtremity(fromFile);

  // A study in the spool (a 10-minute quiet period: routing has not run, and the dry run queues nothing).
  const stored = await gateway.store([CHEST]);
  assert.equal(stored.code, 0, stored.stderr);
  const studyUid = (await gateway.api<{ studyUid: string; callingAe: string }[]>('/api/studies')).find(
    (s) => s.callingAe === 'MODALITY1',
  )?.studyUid;
  assert.ok(studyUid);
  const spooled = await post(JSON.stringify({ studyUid }), 'application/json');
  assert.equal(spooled.status, 200);
  const fromStudy = (await spooled.json()) as Explanation;
  assert.equal(fromStudy.series.length, 1, 'one study, one series');
  assert.deepEqual(
    fromStudy.jobs.map((j) => j.model),
    [CHEST_MODEL],
  );
  const queues = await gateway.api<{ name: string; counts: Record<string, number> }[]>('/api/queues');
  const inference = queues.filter((q) => q.name.startsWith('inference'));
  assert.ok(inference.length > 0, 'the inference queues are listed');
  assert.equal(
    inference.flatMap((q) => Object.values(q.counts)).reduce((a, b) => a + b, 0),
    0,
    'nothing queued',
  );

  assert.equal((await post('{"studyUid":"not a uid"}', 'application/json')).status, 400);
  assert.equal((await post('{"studyUid":"1.2.3.4.5.6"}', 'application/json')).status, 404);
  const garbage = await post(Buffer.from('not DICOM at all'), 'application/dicom');
  assert.equal(garbage.status, 400);
  assert.match(((await garbage.json()) as { error: string }).error, /not a readable DICOM file/);
  assert.ok((await fetch(`http://127.0.0.1:${gateway.httpPort}/healthz`)).ok, 'the gateway keeps serving');
});
