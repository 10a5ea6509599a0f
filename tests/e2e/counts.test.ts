// Completion from the counts the images carry, end to end: a real gateway (CLI child process, role `all`)
// with a 10-minute quiet period and a routing rule whose completeWhen asks for one CR series from the sender
// CR_ROOM. A CR chest image carrying Number of Series Related Instances = 1, stored with storescu from
// CR_ROOM, gets its SR in the built-in folder destination within seconds; the same image without the count
// stays in 'receiving' (only the 10-minute timer could complete it).
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { parseDicom, runTool } from '../helpers/dicom-tools.ts';
import { makeModelsDir, SHARED, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';

const FUJI_CHEST = path.join(SHARED, 'dicom-samples/xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');

interface StudyRow {
  state: string;
  run: number;
  completion?: { by: string; incomplete: boolean };
}

let gateway: GatewayProcess;
let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-counts-e2e-'));
  gateway = await startGateway({
    modelsDir: await makeModelsDir(['cxr']),
    config: {
      study: { quietPeriodMs: 600_000 },
      routing: {
        rules: [
          {
            name: 'cr-room',
            match: { callingAE: 'CR_ROOM' },
            models: ['*'],
            completeWhen: { series: [{ Modality: 'CR' }] },
          },
        ],
      },
    },
  });
});

after(async () => {
  await gateway?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The sample under fresh Study/Series/SOP Instance UIDs, with these attributes set (dcmodify). */
async function derive(name: string, inserts: string[]): Promise<{ file: string; studyUid: string }> {
  const file = path.join(dir, name);
  await copyFile(FUJI_CHEST, file);
  const args = ['-nb', '-gst', '-gse', '-gin', ...inserts.flatMap((i) => ['-i', i]), file];
  const r = await runTool('dcmodify', args);
  assert.equal(r.code, 0, r.stderr);
  return { file, studyUid: parseDicom(await readFile(file)).StudyInstanceUID as string };
}

async function srs(studyUid: string): Promise<string[]> {
  const d = path.join(gateway.dataDir, 'results', studyUid);
  const out: string[] = [];
  for (const f of (await readdir(d).catch(() => [])).filter((x) => x.endsWith('.dcm')))
    if (parseDicom(await readFile(path.join(d, f))).Modality === 'SR') out.push(f);
  return out;
}

const study = (uid: string) => gateway.api<StudyRow>(`/api/studies/${uid}`).catch(() => undefined);

test('a CR chest with Number of Series Related Instances = 1 gets its SR within seconds, not 10 minutes', async () => {
  const counted = await derive('counted.dcm', ['(0020,1209)=1']);
  const uncounted = await derive('uncounted.dcm', []);
  const stored = await gateway.store([uncounted.file, counted.file], { aet: 'CR_ROOM' });
  assert.equal(stored.code, 0, stored.stderr);
  const storedAt = Date.now();

  const reports = await waitFor('the SR of the counted study', async () => {
    const found = await srs(counted.studyUid);
    return found.length > 0 ? found : undefined;
  });
  const elapsed = Date.now() - storedAt;
  assert.equal(reports.length, 1);
  assert.ok(elapsed < 30_000, `SR after ${elapsed} ms`);
  const row = await study(counted.studyUid);
  assert.equal(row?.completion?.by, 'counts');
  assert.equal(row?.completion?.incomplete, false);
  assert.equal(row?.run, 1);

  // The image without the count, stored first on the same association, is still waiting for the timer.
  const waiting = await study(uncounted.studyUid);
  assert.equal(waiting?.state, 'receiving');
  assert.equal(waiting?.run, 0);
  assert.deepEqual(await srs(uncounted.studyUid), []);
});
