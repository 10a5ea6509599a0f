// Real hospital traffic, end to end: every case of the corpus (tests/helpers/real-world-corpus.ts: real
// samples changed the way equipment and RIS really write them) is sent by C-STORE (dcmtk storescu) to a
// real gateway delivering to a real PACS (Orthanc, STOW-RS), all as parallel studies. Each case must end
// the way it declares: a dciodvfy-clean SR in the PACS from the expected model, carrying the source's
// patient name bytes and Specific Character Set, or a visible state ('no-model', 'failed') whose detail
// gives the declared reason. The yield (cases reported / all) is printed as a table.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { dciodvfy, dsrdump } from '../helpers/dicom-tools.ts';
import { makeModelsDir, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { fetchSeriesInstance, startOrthanc, type OrthancInstance } from '../helpers/orthanc.ts';
import { tagNumber, topLevelValue } from '../helpers/raw-elements.ts';
import {
  CHEST_ALGORITHM,
  CHEST_MODEL,
  CORPUS_ROUTING_RULES,
  ER_CR_AE,
  generateCorpus,
  type CorpusCase,
} from '../helpers/real-world-corpus.ts';
import { readReport, type ReportContent } from '../helpers/sr-content.ts';

interface StudyDetail {
  state: string;
  detail?: string;
  series: {
    seriesUid: string;
    models?: Record<string, { accepted: boolean; reasons: string[] }>;
  }[];
  models: Record<string, { images: number; skipped: number; reasons: string[] }>;
}

interface CaseResult {
  c: CorpusCase;
  state: string;
  detail?: string;
  /** The SR from the PACS, for cases that report. */
  report?: { content: ReportContent; bytes: Buffer; file: string };
  problems: string[];
  /** From sending to settled and checked. */
  seconds?: number;
}

const SETTLED = new Set(['done', 'no-model', 'failed']);
let dir: string;
let cases: CorpusCase[];
let orthanc: OrthancInstance;
let gateway: GatewayProcess;
const results: CaseResult[] = [];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'aigw-corpus-'));
  cases = await generateCorpus(dir);
  const modelsDir = await makeModelsDir(['cxr', 'uniformity']);
  orthanc = await startOrthanc();
  gateway = await startGateway({
    modelsDir,
    config: {
      destinations: { pacs: { kind: 'dicomweb', url: orthanc.dicomwebUrl } },
      defaultDestination: 'pacs',
      dimse: { peers: [{ aeTitle: 'MODALITY1' }, { aeTitle: ER_CR_AE }, { aeTitle: 'ORTHANC' }] },
      routing: { rules: CORPUS_ROUTING_RULES },
      study: { quietPeriodMs: 1500 },
    },
  });
});

after(async () => {
  await gateway?.dispose();
  await orthanc?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Trailing padding (space, NUL) is not part of a value. */
function unpadded(b: Buffer | undefined): Buffer | undefined {
  if (b === undefined) return undefined;
  let end = b.length;
  while (end > 0 && (b[end - 1] === 0x20 || b[end - 1] === 0x00)) end--;
  return b.subarray(0, end);
}

const show = (b: Buffer | undefined) => (b === undefined ? '(absent)' : JSON.stringify(b.toString('latin1')));

async function settle(c: CorpusCase): Promise<StudyDetail> {
  return waitFor(
    `study ${c.name} to settle`,
    async () => {
      const d = await gateway.api<StudyDetail>(`/api/studies/${c.studyUid}`).catch(() => undefined);
      return d && SETTLED.has(d.state) ? d : undefined;
    },
    150_000,
  );
}

/** Sends one case and checks it against what it declares; problems are collected, not thrown. */
async function runCase(c: CorpusCase): Promise<CaseResult> {
  const problems: string[] = [];
  const sent = await gateway.store(c.files, {
    ...(c.aet ? { aet: c.aet } : {}),
    ...(c.storeArgs ? { args: c.storeArgs } : {}),
  });
  if (sent.code !== 0) problems.push(`storescu exit ${sent.code}: ${sent.stderr.slice(0, 300)}`);
  const study = await settle(c);
  const result: CaseResult = { c, state: study.state, detail: study.detail, problems };
  const o = c.outcome;
  if (o.expect !== 'report') {
    if (study.state !== o.expect)
      problems.push(`state ${study.state}, expected ${o.expect} (${study.detail})`);
    if (!o.reason.test(study.detail ?? ''))
      problems.push(`detail ${JSON.stringify(study.detail)} lacks ${o.reason}`);
    if (o.expect === 'no-model') {
      // The series decisions say the same: every model declined, the declared criterion among the reasons.
      const decisions = study.series.flatMap((s) => Object.values(s.models ?? {}));
      if (decisions.length === 0 || decisions.some((d) => d.accepted))
        problems.push(`series decisions: ${JSON.stringify(study.series)}`);
      if (!decisions.some((d) => d.reasons.some((r) => o.reason.test(r))))
        problems.push(`no series decision gives ${o.reason}: ${JSON.stringify(decisions)}`);
    }
    return result;
  }
  if (study.state !== 'done') {
    problems.push(`state ${study.state}, expected done (${study.detail})`);
    return result;
  }
  // Several models may report on one study: the SR of the expected one.
  const report = await reportOf(c, o.algorithm);
  if (report === undefined) {
    problems.push(`no SR from ${o.algorithm} in the PACS`);
    return result;
  }
  result.report = report;
  const v = await dciodvfy(report.file);
  if (v.errors.length) problems.push(`dciodvfy: ${v.errors.join(' | ')}`);
  const source = await readFile(c.files[0]!);
  for (const [tag, what] of [
    [tagNumber(0x0008, 0x0005), 'Specific Character Set'],
    [tagNumber(0x0010, 0x0010), 'patient name'],
  ] as const) {
    const expected =
      what === 'patient name' && o.patientName ? o.patientName : unpadded(topLevelValue(source, tag));
    const got = unpadded(topLevelValue(report.bytes, tag));
    const same = expected === undefined || expected.length === 0 ? !got?.length : got?.equals(expected);
    if (!same) problems.push(`${what}: ${show(got)}, source ${show(expected)}`);
  }
  if (o.skipped) {
    const outcome = Object.entries(study.models).find(([k]) => k.startsWith(o.skipped!.model))?.[1];
    if (!outcome || outcome.skipped < 1 || !outcome.reasons.some((r) => o.skipped!.reason.test(r)))
      problems.push(
        `${o.skipped.model} outcome ${JSON.stringify(outcome)} does not show ${o.skipped.reason}`,
      );
  }
  if (o.declined) {
    const decisions = study.series.map((s) =>
      Object.entries(s.models ?? {}).find(([k]) => k.startsWith(o.declined!.model)),
    );
    if (!decisions.some((d) => d && !d[1].accepted && d[1].reasons.some((r) => o.declined!.reason.test(r))))
      problems.push(
        `${o.declined.model} decision does not show ${o.declined.reason}: ${JSON.stringify(decisions)}`,
      );
  }
  return result;
}

/** The SR of the model whose algorithm name matches, from the PACS (its series is 'AI: <model name>'). */
async function reportOf(c: CorpusCase, algorithm: RegExp): Promise<CaseResult['report']> {
  const bytes = await fetchSeriesInstance(
    orthanc,
    c.studyUid,
    'SR',
    new RegExp(`^AI: .*(${algorithm.source})`),
  ).catch(() => undefined);
  if (!bytes) return undefined;
  const content = readReport(bytes);
  const file = path.join(dir, `${c.name}-sr.dcm`);
  writeFileSync(file, bytes);
  return { content, bytes, file };
}

test('real-world corpus: every case ends in a report or a visible state with its reason', async () => {
  const started = Date.now();
  // Parallel studies, a few associations at a time, as several modalities would send.
  const queue = [...cases];
  await Promise.all(
    Array.from({ length: 6 }, async () => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        const at = Date.now();
        const r = await runCase(c).catch((err: unknown): CaseResult => ({
          c: c!,
          state: '?',
          problems: [`error: ${String(err)}`],
        }));
        r.seconds = (Date.now() - at) / 1000;
        results.push(r);
      }
    }),
  );
  results.sort((a, b) => cases.indexOf(a.c) - cases.indexOf(b.c));
  const reported = results.filter((r) => r.report && r.problems.length === 0);
  const visible = results.filter((r) => !r.report && r.problems.length === 0);
  console.log(
    [
      '',
      `Real-world corpus: ${reported.length} of ${results.length} cases reported; ` +
        `the other ${visible.length} end in a visible state with their reason` +
        `; ${results.length - reported.length - visible.length} not as declared (${Math.round((Date.now() - started) / 1000)} s)`,
      ...results.map(
        (r) =>
          `  ${r.problems.length ? 'FAIL' : 'ok  '} ${r.c.name.padEnd(26)} (${r.c.issueClass}) ${String(Math.round(r.seconds ?? 0)).padStart(3)} s ${r.c.trait.padEnd(48)} ${
            r.report
              ? `report: ${r.report.content.groups.map((g) => g.finding).join(', ')}`
              : `${r.state}: ${(r.detail ?? '').replace(/ on [0-9.]+:/g, ':').slice(0, 160)}`
          }${r.problems.length ? `\n       ${r.problems.join('\n       ')}` : ''}`,
      ),
    ].join('\n'),
  );
  assert.deepEqual(
    results.filter((r) => r.problems.length).map((r) => `${r.c.name}: ${r.problems.join('; ')}`),
    [],
  );
  // Every issue class is in the corpus (4, exclusive classes, is every chest report: see the next test).
  for (const k of [1, 2, 3, 5])
    assert.ok(
      cases.some((c) => c.issueClass === k),
      `issue class ${k}`,
    );
});

test('chest radiographs, whatever their body part says, get the chest model: one finding of exclusive classes', () => {
  const chestCases = results.filter(
    (r) => r.c.outcome.expect === 'report' && r.c.outcome.algorithm === CHEST_ALGORITHM,
  );
  assert.ok(chestCases.length >= 10, `${chestCases.length} chest cases`);
  for (const r of chestCases) {
    const groups = r.report?.content.groups ?? [];
    // (4) one finding: the most probable class, Present, with each class's probability; never every class Absent.
    assert.equal(groups.length, 1, `${r.c.name}: ${JSON.stringify(groups)}`);
    const g = groups[0]!;
    assert.match(g.algorithmName ?? '', CHEST_ALGORITHM, r.c.name);
    assert.equal(g.qualitative, 'Present', r.c.name);
    const classes = Object.values(g.classes ?? {});
    assert.equal(classes.length, 3, `${r.c.name}: ${JSON.stringify(g.classes)}`);
    assert.ok(
      classes.every((p) => p <= g.probability! + 1e-9),
      r.c.name,
    );
    assert.ok(Math.abs(classes.reduce((a, b) => a + b, 0) - 1) < 0.01, `${r.c.name}: probabilities sum to 1`);
  }
  // (3) the synonyms, the empty body part and the absent one under the ER rule all reached the chest model.
  for (const name of [
    'body-thorax',
    'body-torax',
    'body-pa-chest',
    'body-empty-description',
    'body-absent-er-rule',
  ])
    assert.ok(
      chestCases.some((r) => r.c.name === name && r.report),
      `${name} reported by the chest model`,
    );
  assert.ok(
    results.some((r) => r.c.outcome.expect === 'report' && r.c.outcome.declined?.model === CHEST_MODEL),
    'a chest image with nothing saying chest is declined by the chest model, visibly',
  );
});

test('the SR of a report passes dsrdump', async () => {
  // One per character set family is enough to show the tree parses; dciodvfy ran on every one above.
  for (const r of results.filter(
    (x) => x.report && /charset-(latin1|utf8|gb18030)|legacy-dates/.test(x.c.name),
  )) {
    const dump = await dsrdump(r.report!.file, ['+U8']);
    assert.equal(dump.code, 0, `${r.c.name}: ${dump.stderr}`);
    assert.doesNotMatch(dump.stderr, /^[EF]:/m, r.c.name);
  }
});
