// The priority proof, end to end: a real gateway (CLI child process, role `all`) delivering SRs to a real
// Orthanc over DICOMweb. Rules mark a CR chest from AE ER_CR as STAT (with a 60 s p95 SLO) and CT as
// routine. First one STAT chest X-ray on the idle gateway gives its idle receive → SR time; then 20
// routine CT studies are pushed, and one more STAT chest X-ray right behind them. Its SR must be in the
// PACS before the last routine SR (the backlog has not drained), and its receive → SR time within 2× the
// idle one. Every study is derived at test time: re-UIDed copies of the shared samples (dcmodify).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { runTool } from '../helpers/dicom-tools.ts';
import { makeModelsDir, SHARED, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startOrthanc, type OrthancInstance } from '../helpers/orthanc.ts';

const CT_DIR = path.join(SHARED, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm');
const FUJI_CHEST = path.join(SHARED, 'dicom-samples/xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
const CXR = 'squeezenet1_1-cxr-pneumonia';
const ROUTINE_STUDIES = 20;
/** Slices per routine study: enough that the 20 studies make a backlog on a 2-core machine. */
const SLICES = Number(process.env.AIGW_PRIORITY_SLICES ?? 28);

let orthanc: OrthancInstance;
let gateway: GatewayProcess;
let workDir: string;

const newUid = () => `2.25.${BigInt(`0x${randomBytes(15).toString('hex')}`).toString()}`;

/** Copies `files` into a fresh study (new Study, Series and SOP Instance UIDs); returns the study UID and files. */
async function deriveStudy(files: string[], name: string): Promise<{ studyUid: string; files: string[] }> {
  const dir = path.join(workDir, name);
  await mkdir(dir);
  const copies = files.map((f, i) => path.join(dir, `${i}.dcm`));
  await Promise.all(files.map((f, i) => copyFile(f, copies[i]!)));
  const studyUid = newUid();
  const res = await runTool('dcmodify', [
    '-nb',
    '-m',
    `(0020,000d)=${studyUid}`,
    '-m',
    `(0020,000e)=${newUid()}`,
    '-gin',
    ...copies,
  ]);
  assert.equal(res.code, 0, res.stderr);
  return { studyUid, files: copies };
}

/** The gateway's own receive → SR delivered sum and count for a lane and model, from /metrics. */
async function turnaroundMetric(lane: string, model: string): Promise<{ sum: number; count: number }> {
  const text = await (await fetch(`http://127.0.0.1:${gateway.httpPort}/metrics`)).text();
  const read = (what: string) => {
    const re = new RegExp(
      `^aigw_study_turnaround_seconds_${what}\\{priority="${lane}",model="${model}"\\} (\\S+)$`,
      'm',
    );
    return Number(re.exec(text)?.[1] ?? 0);
  };
  return { sum: read('sum'), count: read('count') };
}

/** One STOW-RS request with the files (loopback: no credentials needed). */
async function stow(files: string[]): Promise<{ status: number; body: string }> {
  const boundary = `b${randomBytes(8).toString('hex')}`;
  const parts: Buffer[] = [];
  for (const f of files)
    parts.push(
      Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`),
      await readFile(f),
      Buffer.from('\r\n'),
    );
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  const res = await fetch(`http://127.0.0.1:${gateway.httpPort}/dicomweb/studies`, {
    method: 'POST',
    headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}` },
    body: new Uint8Array(Buffer.concat(parts)),
  });
  return { status: res.status, body: await res.text() };
}

/** Resolves once the study has an instance in Orthanc (it holds only the gateway's SRs). */
async function srInPacs(studyUid: string, timeoutMs = 90_000): Promise<void> {
  await waitFor(
    `an SR of ${studyUid} in Orthanc`,
    async () => {
      const res = await orthanc.rest('/tools/lookup', { method: 'POST', body: studyUid });
      const found = (await res.json()) as { Type: string }[];
      return found.some((r) => r.Type === 'Study') ? true : undefined;
    },
    timeoutMs,
  );
}

/** Studies of the instances Orthanc received, in the order it stored them (its change log). */
async function arrivalOrder(): Promise<string[]> {
  const changes = await orthanc.restJson<{ Changes: { ChangeType: string; ID: string; Seq: number }[] }>(
    '/changes?since=0&limit=10000',
  );
  const order: string[] = [];
  for (const c of changes.Changes.filter((x) => x.ChangeType === 'NewInstance').sort(
    (a, b) => a.Seq - b.Seq,
  )) {
    const tags = await orthanc.restJson<{ StudyInstanceUID: string }>(`/instances/${c.ID}/simplified-tags`);
    order.push(tags.StudyInstanceUID);
  }
  return order;
}

before(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'aigw-e2e-priority-'));
  const modelsDir = await makeModelsDir(['cxr', 'uniformity']);
  orthanc = await startOrthanc();
  gateway = await startGateway({
    modelsDir,
    config: {
      destinations: { pacs: { kind: 'dicomweb', url: orthanc.dicomwebUrl } },
      defaultDestination: 'pacs',
      // Short, so that the STAT study's own wait for completion is not most of its turnaround.
      study: { quietPeriodMs: Number(process.env.AIGW_PRIORITY_QUIET_MS ?? 600) },
      dimse: { peers: [{ aeTitle: 'MODALITY1' }, { aeTitle: 'ER_CR' }] },
      routing: {
        rules: [
          {
            name: 'er-chest',
            match: { callingAE: 'ER_CR', Modality: 'CR' },
            models: [CXR],
            priority: 'stat',
            slo: { p95Seconds: 60 },
          },
          {
            name: 'routine-ct',
            match: { Modality: 'CT' },
            models: ['image-uniformity'],
            priority: 'routine',
          },
        ],
      },
    },
  });
});

after(async () => {
  await gateway?.dispose();
  await orthanc?.stop();
  if (workDir && !process.env.AIGW_KEEP_TEST_DIRS) await rm(workDir, { recursive: true, force: true });
});

test('a STAT chest X-ray pushed behind 20 routine CT studies reaches the PACS before the backlog drains, within 2× its idle time', async () => {
  const ct = (await readdir(CT_DIR))
    .filter((f) => f.endsWith('.dcm'))
    .sort()
    .slice(0, SLICES)
    .map((f) => path.join(CT_DIR, f));
  const warmStat = await deriveStudy([FUJI_CHEST], 'stat-warm');
  const idleStat = await deriveStudy([FUJI_CHEST], 'stat-idle');
  const loadedStat = await deriveStudy([FUJI_CHEST], 'stat-loaded');
  const routine = [];
  for (let i = 0; i < ROUTINE_STUDIES; i++) routine.push(await deriveStudy(ct, `ct-${i}`));

  // Warm-up (first chest inference, first connection to the PACS), not measured.
  const sentWarm = await gateway.store(warmStat.files, { aet: 'ER_CR' });
  assert.equal(sentWarm.code, 0, sentWarm.stderr);
  await srInPacs(warmStat.studyUid);
  const warm = await waitFor('the warm-up turnaround in /metrics', async () => {
    const m = await turnaroundMetric('stat', CXR);
    return m.count === 1 ? m : undefined;
  });

  // Idle: the gateway's receive → SR delivered time for one STAT study, nothing else going on.
  const t0 = Date.now();
  const sentIdle = await gateway.store(idleStat.files, { aet: 'ER_CR' });
  assert.equal(sentIdle.code, 0, sentIdle.stderr);
  await srInPacs(idleStat.studyUid);
  const idleWallS = (Date.now() - t0) / 1000;
  const idle = await waitFor('the idle turnaround in /metrics', async () => {
    const m = await turnaroundMetric('stat', CXR);
    return m.count === 2 ? m : undefined;
  });
  const idleS = idle.sum - warm.sum;

  // Loaded: 20 routine CT studies, then the STAT chest X-ray right behind them.
  const t1 = Date.now();
  // Pushed at once, one STOW-RS request per study, as a router or archive forwarding a day's CTs would.
  const stows = await Promise.all(routine.map((st) => stow(st.files)));
  for (const res of stows) assert.equal(res.status, 200, res.body);
  const routineSentS = (Date.now() - t1) / 1000;
  const t2 = Date.now();
  const sentStat = await gateway.store(loadedStat.files, { aet: 'ER_CR' });
  assert.equal(sentStat.code, 0, sentStat.stderr);
  await srInPacs(loadedStat.studyUid);
  const loadedWallS = (Date.now() - t2) / 1000;
  const loaded = await waitFor('the loaded turnaround in /metrics', async () => {
    const m = await turnaroundMetric('stat', CXR);
    return m.count === 3 ? m : undefined;
  });
  const loadedS = loaded.sum - idle.sum;
  for (const s of routine) await srInPacs(s.studyUid, 120_000);
  const drainedS = (Date.now() - t1) / 1000;

  const order = await arrivalOrder();
  const statAt = order.indexOf(loadedStat.studyUid);
  const routineAt = routine.map((s) => order.indexOf(s.studyUid));
  assert.ok(routineAt.every((i) => i >= 0) && statAt >= 0, `every SR arrived: ${order.length}`);
  const after = routineAt.filter((i) => i > statAt).length;
  const figures =
    `slices/study ${SLICES}; quiet period ${process.env.AIGW_PRIORITY_QUIET_MS ?? 600} ms; idle STAT ${idleS.toFixed(2)} s (wall ${idleWallS.toFixed(2)} s); ` +
    `loaded STAT ${loadedS.toFixed(2)} s (wall ${loadedWallS.toFixed(2)} s); routine push ${routineSentS.toFixed(1)} s; ` +
    `backlog drained ${drainedS.toFixed(1)} s after the push began; routine SRs after the STAT one: ${after}/${ROUTINE_STUDIES}`;
  console.log(`# priority figures: ${figures}`);
  assert.ok(statAt < Math.max(...routineAt), `the STAT SR came after the last routine SR: ${figures}`);
  assert.ok(loadedS <= 2 * idleS, `loaded STAT turnaround over 2× idle: ${figures}`);

  // The console's view: the three STAT studies in the last hour, the rule's 60 s SLO met.
  const summary = await gateway.api<{
    lanes: { lane: string; count: number; p50: number; p95: number }[];
    slos: { rule: string; count: number; breached: boolean }[];
  }>('/api/turnaround');
  assert.equal(summary.lanes.find((l) => l.lane === 'stat')?.count, 3);
  // At least one SR per routine study (a study split by a stall longer than the quiet period runs twice).
  assert.ok((summary.lanes.find((l) => l.lane === 'routine')?.count ?? 0) >= ROUTINE_STUDIES);
  assert.deepEqual(
    summary.slos.map((s) => [s.rule, s.count, s.breached]),
    [['er-chest', 3, false]],
  );
});
