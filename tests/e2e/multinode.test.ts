// The multi-machine shape on one host (issue 16): two gateway processes and two worker processes, each
// with its own data directory and models directory, sharing only Redis (through Sentinel) and an S3 server
// (s3rver); Orthanc with DICOMweb is the PACS, dcmtk storescu the modality. Three scenarios:
//  1. one study split across both gateways gives one SR in Orthanc referencing every instance;
//  2. the worker running a study's job is SIGKILLed mid-job (its disk wiped): the other worker takes the
//     job over after the lock expires and one SR lands in Orthanc;
//  3. a gateway is SIGKILLed mid-study (its disk wiped): the other keeps ingesting, what the dead one did
//     not answer is re-sent to the survivor as a modality would, and every instance answered Success is
//     referenced by the SR.
// No filesystem is shared: besides each node's own directory, Redis must hold no host path (checked), and
// a lost node's data directory is deleted, so what it acknowledged can only come back from S3.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { chmod, copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { runTool } from '../helpers/dicom-tools.ts';
import { startCluster, type Cluster, type ClusterNode } from '../helpers/cluster.ts';
import { SHARED, waitFor } from '../helpers/gateway.ts';
import { storeResponses } from '../helpers/ingest.ts';
import { startOrthanc, type OrthancInstance } from '../helpers/orthanc.ts';
import { readReport } from '../helpers/sr-content.ts';

const FUJI_CHEST = path.join(SHARED, 'dicom-samples/xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
/** 1955 × 1841, JPEG 2000: each image takes a worker a while to decode, so a job of a few runs long. */
const PHILIPS_CHEST_J2K = path.join(
  SHARED,
  'dicom-samples/xray/cr-chest-pa-mono1-philips-wg04-RG1-j2k-lossy.dcm',
);
/** How long a worker's job lock lasts: a killed worker's job goes to the other one after about this. */
const LOCK_MS = 3_000;
/** Lock expiry plus two stalled-job checks at the lock's pace, with room for a loaded machine. */
const TAKEOVER_BOUND_MS = 20_000;
let cluster: Cluster | undefined;
let orthanc: OrthancInstance;
let workDir: string;
let startError: unknown;

before(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'aigw-multinode-'));
  orthanc = await startOrthanc();
  try {
    cluster = await startCluster({
      gateways: 2,
      workers: 2,
      models: ['cxr'],
      config: {
        destinations: { pacs: { kind: 'dicomweb', url: orthanc.dicomwebUrl } },
        defaultDestination: 'pacs',
        dimse: { peers: [{ aeTitle: 'MODALITY1' }] },
        // Long enough that a study sent over two gateways (or re-sent after a loss) is one run.
        study: { quietPeriodMs: 6_000 },
      },
      // One job at a time per worker, one ONNX thread: the study's job runs long enough to be caught.
      workerConfig: {
        worker: { concurrency: 1, lockDurationMs: LOCK_MS, intraOpThreads: 1, decodeThreads: 1 },
      },
    });
  } catch (err) {
    // Each scenario reports it (as its own failure), so a todo scenario stays todo.
    startError = err;
  }
});

after(async () => {
  await cluster?.dispose();
  await orthanc?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

function started(): Cluster {
  if (!cluster) throw startError instanceof Error ? startError : new Error(String(startError));
  return cluster;
}

let uidCounter = 0;
function newStudyUid(): string {
  uidCounter++;
  return `2.25.${BigInt(Date.now()) * 1000n + BigInt(process.pid % 1000)}${uidCounter}`;
}

/**
 * `count` copies of a chest CR as one study: new study, series and SOP Instance UIDs set by dcmtk's
 * dcmodify (which updates the meta header too and leaves the encapsulated pixel data as it is).
 */
async function chestStudy(
  count: number,
  sourceFile = FUJI_CHEST,
): Promise<{ studyUid: string; files: { file: string; sop: string }[] }> {
  const studyUid = newStudyUid();
  const files: { file: string; sop: string }[] = [];
  for (let i = 1; i <= count; i++) {
    const sop = `${studyUid}.2.${i}`;
    const file = path.join(workDir, `${sop}.dcm`);
    await copyFile(sourceFile, file);
    await chmod(file, 0o644);
    const r = await runTool('dcmodify', [
      '-nb',
      '-m',
      `(0020,000D)=${studyUid}`,
      '-m',
      `(0020,000E)=${studyUid}.1`,
      '-m',
      `(0008,0018)=${sop}`,
      '-m',
      `(0020,0013)=${i}`,
      file,
    ]);
    if (r.code !== 0) throw new Error(`dcmodify: ${r.stdout}${r.stderr}`);
    files.push({ file, sop });
  }
  return { studyUid, files };
}

/** One association per instance, as the failover scenario needs each answer: the C-STORE status. */
async function storeOne(node: ClusterNode, file: string): Promise<string> {
  const run = await node.store([file], { args: ['-v'], timeoutMs: 20_000 });
  return storeResponses(`${run.stdout}${run.stderr}`)[0] ?? `no answer (exit ${run.code ?? run.signal})`;
}

/** The SR instances Orthanc holds for a study: their SOP Instance UIDs and referenced instances. */
async function srsInPacs(studyUid: string): Promise<{ sop: string; references: string[] }[]> {
  const res = await orthanc.rest('/tools/find', {
    method: 'POST',
    body: JSON.stringify({ Level: 'Instance', Query: { StudyInstanceUID: studyUid, Modality: 'SR' } }),
  });
  if (!res.ok) throw new Error(`Orthanc /tools/find: ${res.status}`);
  const ids = (await res.json()) as string[];
  const out: { sop: string; references: string[] }[] = [];
  for (const id of ids) {
    const file = Buffer.from(await (await orthanc.rest(`/instances/${id}/file`)).arrayBuffer());
    const report = readReport(file);
    out.push({ sop: String(report.dataset.SOPInstanceUID), references: report.referencedSopInstanceUids });
  }
  return out;
}

/** Waits until Orthanc has an SR for the study, then for the study to settle; returns every SR. */
async function reportOf(c: Cluster, studyUid: string, timeoutMs: number) {
  await waitFor(
    `an SR for study ${studyUid} in Orthanc`,
    async () => ((await srsInPacs(studyUid)).length > 0 ? true : undefined),
    timeoutMs,
  );
  // Settled: done in the shared index (as any gateway shows it), so a second SR would be there by now.
  await waitFor(
    `study ${studyUid} to be done`,
    async () => {
      const s = await c.gateways.find((g) => g.pid)!.api<{ state: string }>(`/api/studies/${studyUid}`);
      return s.state === 'done' ? s : undefined;
    },
    60_000,
  );
  return srsInPacs(studyUid);
}

interface ActiveJob {
  queue: string;
  id: string;
  processedBy?: string;
  processedOn?: string;
  finishedOn?: string;
  attemptsStarted?: string;
}

/** The inference job(s) of a study in BullMQ's active lists, with the worker that holds each. */
async function activeJobsOf(c: Cluster, studyUid: string): Promise<ActiveJob[]> {
  const out: ActiveJob[] = [];
  for (const key of await c.redis.keys(`${c.prefix}:*:active`)) {
    const queue = key.slice(c.prefix.length + 1, -':active'.length);
    for (const id of await c.redis.lrange(key, 0, -1)) {
      const job = await c.redis.hgetall(`${c.prefix}:${queue}:${id}`);
      if (!job.data?.includes(studyUid) || !job.data.includes('"modelId"')) continue;
      out.push({
        queue,
        id,
        processedBy: job.pb,
        processedOn: job.processedOn,
        finishedOn: job.finishedOn,
        attemptsStarted: job.ats,
      });
    }
  }
  return out;
}

/** Every host path of a node's data directory found in a Redis value under the cluster's prefix. */
async function hostPathsInRedis(c: Cluster): Promise<string[]> {
  const dirs = [...c.gateways, ...c.workers].map((n) => path.dirname(n.dataDir));
  const found: string[] = [];
  for (const key of await c.redis.keys(`${c.prefix}:*`)) {
    const type = await c.redis.type(key);
    let values: string[] = [];
    if (type === 'string') values = [(await c.redis.get(key)) ?? ''];
    else if (type === 'hash') values = Object.values(await c.redis.hgetall(key));
    else if (type === 'list') values = await c.redis.lrange(key, 0, -1);
    else if (type === 'set') values = await c.redis.smembers(key);
    else if (type === 'zset') values = await c.redis.zrange(key, '0', '-1');
    else if (type === 'stream')
      values = (await c.redis.xrange(key, '-', '+')).flatMap(([, fields]) => fields);
    for (const v of values) if (dirs.some((d) => v.includes(d))) found.push(`${key}: ${v.slice(0, 200)}`);
  }
  return found;
}

/** Exactly one SR for the study, and it references exactly these instances. */
function assertOneReportOf(srs: { references: string[] }[], sops: string[]): void {
  assert.equal(srs.length, 1, `one SR, not ${srs.length}`);
  assert.deepEqual(srs[0]!.references.slice().sort(), sops.slice().sort());
}

test(
  'one study split across two gateways gives one SR in Orthanc referencing every instance',
  { timeout: 150_000 },
  async (t) => {
    const c = started();
    await c.explain(async () => {
      const { studyUid, files } = await chestStudy(8);
      const [g1, g2] = c.gateways as [ClusterNode, ClusterNode];
      const halves = [files.filter((_, i) => i % 2 === 0), files.filter((_, i) => i % 2 === 1)];
      const t0 = Date.now();
      const sent = await Promise.all([
        g1.store(halves[0]!.map((f) => f.file)),
        g2.store(halves[1]!.map((f) => f.file)),
      ]);
      for (const s of sent) assert.equal(s.code, 0, `storescu: ${s.stdout}${s.stderr}`);
      const srs = await reportOf(c, studyUid, 90_000);
      t.diagnostic(`SR in Orthanc ${Date.now() - t0} ms after the first store`);
      assertOneReportOf(
        srs,
        files.map((f) => f.sop),
      );
      // Each gateway's ingest wrote to S3, not only to its own disk; Redis names no host path.
      const objects = await c.listKeys(c.storagePrefix);
      assert.ok(objects.length >= files.length, `${objects.length} objects in the bucket`);
      assert.deepEqual(await hostPathsInRedis(c), [], 'Redis holds host paths');
    });
  },
);

test(
  'a worker SIGKILLed mid-job: the other worker takes the job over and one SR lands',
  { timeout: 180_000 },
  async (t) => {
    const c = started();
    await c.explain(async () => {
      const { studyUid, files } = await chestStudy(12, PHILIPS_CHEST_J2K);
      // -xw: propose JPEG 2000 (lossy), the files' own transfer syntax.
      const sent = await c.gateways[0]!.store(
        files.map((f) => f.file),
        { args: ['-xw'] },
      );
      assert.equal(sent.code, 0, `storescu: ${sent.stdout}${sent.stderr}`);
      // The job is caught while a worker runs it: BullMQ names the worker (its process) on the job.
      const job = await waitFor(
        `the study's inference job to be active on a worker`,
        async () => (await activeJobsOf(c, studyUid)).find((j) => j.processedBy),
        90_000,
      );
      const pid = Number(job.processedBy!.split(':').pop());
      const victim = c.byPid(pid);
      assert.ok(victim && victim.role === 'worker', `job ${job.id} held by ${job.processedBy}, no worker`);
      const survivor = c.workers.find((w) => w !== victim)!;
      await victim.lose();
      const killedAt = Date.now();
      const ranMs = job.processedOn ? killedAt - Number(job.processedOn) : NaN;
      t.diagnostic(
        `job ${job.id} (${job.queue}) held by ${victim.name} (${job.processedBy}) for ${ranMs} ms: SIGKILLed`,
      );
      // Killed mid-job: it had not finished, and the victim never wrote its report.
      const victimLog = readFileSync(victim.logPath, 'utf8');
      assert.doesNotMatch(victimLog, new RegExp(`"event":"inference.done"[^\\n]*"studyUid":"${studyUid}"`));

      // The survivor takes the job once the lock expired: a worker looks for stalled jobs as often as the
      // lock lasts (BullMQ alone would look every 30 s, and move a job only on its second look).
      const retaken = await waitFor(
        `${survivor.name} to take the job over within ${TAKEOVER_BOUND_MS} ms of the kill`,
        async () => {
          const j = await c.redis.hgetall(`${c.prefix}:${job.queue}:${job.id}`);
          return j.pb && Number(j.pb.split(':').pop()) === survivor.pid ? j : undefined;
        },
        TAKEOVER_BOUND_MS,
      );
      t.diagnostic(`taken over ${Number(retaken.processedOn) - killedAt} ms after the kill`);
      const srs = await reportOf(c, studyUid, 120_000);
      t.diagnostic(`SR in Orthanc ${Date.now() - killedAt} ms after the kill`);
      assertOneReportOf(
        srs,
        files.map((f) => f.sop),
      );
      // The survivor ran it: its log has the report, and BullMQ names it on the finished job.
      const survivorLog = readFileSync(survivor.logPath, 'utf8');
      const done = survivorLog
        .split('\n')
        .filter((l) => l.includes('"event":"inference.done"') && l.includes(studyUid));
      assert.equal(done.length, 1, `the survivor wrote the report once: ${done.join('\n')}`);
      const finished = await c.redis.hgetall(`${c.prefix}:${job.queue}:${job.id}`);
      t.diagnostic(`job after: processedBy ${finished.pb}, attempts started ${finished.ats}`);
      if (finished.pb) assert.equal(Number(finished.pb.split(':').pop()), survivor.pid);
      t.diagnostic(`taken over by ${survivor.name} (pid ${survivor.pid}): ${done[0]!.slice(0, 300)}`);
      await victim.start();
    });
  },
);

test(
  'a gateway SIGKILLed mid-study: the other keeps ingesting and every Success reaches the SR',
  { timeout: 180_000 },
  async (t) => {
    const c = started();
    await c.explain(async () => {
      const COUNT = 30;
      const KILL_AFTER = 6;
      const { studyUid, files } = await chestStudy(COUNT);
      const [survivor, victim] = c.gateways as [ClusterNode, ClusterNode];
      const acked = new Map<string, string>(); // sop → gateway that answered Success
      const resend: typeof files = [];
      const answers: Record<string, number> = {};
      const note = (status: string) => (answers[status] = (answers[status] ?? 0) + 1);

      // The modality sends half to each gateway, one association per instance, both at once.
      const toVictim = files.filter((_, i) => i % 2 === 1);
      const toSurvivor = files.filter((_, i) => i % 2 === 0);
      let killed: Promise<void> | undefined;
      const victimSender = (async () => {
        let victimAcks = 0;
        for (const f of toVictim) {
          if (killed) {
            resend.push(f); // the node is gone: the modality goes to the other one
            continue;
          }
          // The kill lands while this association is in flight.
          const storing = storeOne(victim, f.file);
          if (victimAcks === KILL_AFTER) {
            await new Promise((r) => setTimeout(r, 50));
            killed = victim.lose();
            t.diagnostic(`${victim.name} SIGKILLed after ${victimAcks} Success answers`);
          }
          const status = await storing;
          note(`${victim.name} ${status}`);
          if (status === 'Success') {
            acked.set(f.sop, victim.name);
            victimAcks++;
          } else resend.push(f);
        }
        await killed;
      })();
      const survivorSender = (async () => {
        for (const f of toSurvivor) {
          const started = Date.now();
          const status = await storeOne(survivor, f.file);
          note(`${survivor.name} ${status}`);
          assert.equal(status, 'Success', `${survivor.name} answered ${status} for ${f.sop}`);
          assert.ok(Date.now() - started < 10_000, `${survivor.name} took ${Date.now() - started} ms`);
          acked.set(f.sop, survivor.name);
        }
      })();
      await Promise.all([victimSender, survivorSender]);
      assert.ok(killed, `the victim was never killed (answers ${JSON.stringify(answers)})`);
      for (const f of resend) {
        const status = await storeOne(survivor, f.file);
        note(`${survivor.name} (re-sent) ${status}`);
        assert.equal(status, 'Success', `re-sent ${f.sop}: ${status}`);
        acked.set(f.sop, survivor.name);
      }
      t.diagnostic(`C-STORE answers: ${JSON.stringify(answers)}; ${resend.length} re-sent`);
      const byVictim = [...acked].filter(([, g]) => g === victim.name).map(([sop]) => sop);
      assert.ok(byVictim.length >= KILL_AFTER, `${victim.name} acknowledged ${byVictim.length}`);

      const srs = await reportOf(c, studyUid, 150_000);
      assert.equal(srs.length, 1, `one SR, not ${srs.length}`);
      const referenced = new Set(srs[0]!.references);
      const lost = [...acked.keys()].filter((sop) => !referenced.has(sop));
      assert.deepEqual(
        lost,
        [],
        `acknowledged but not in the SR (by the dead gateway: ${lost.filter((s) => byVictim.includes(s)).length})`,
      );
      assert.equal(referenced.size, COUNT);
      await victim.start();
    });
  },
);
