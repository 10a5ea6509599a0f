// The gateway's whole log (debug level) for a study from receipt to delivered report carries the study and
// job ids and never the patient's name, ID or birth date, which are read from the sent file itself.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import dcmjs from 'dcmjs';
import { makeModelsDir, SHARED, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';

// A real CR with a patient name, ID and birth date filled in.
const FILE = path.join(SHARED, 'dicom-samples/xray/cr-chest-pa-mono1-philips-wg04-RG1-j2k-lossy.dcm');

let gateway: GatewayProcess;

before(async () => {
  gateway = await startGateway({ modelsDir: await makeModelsDir(['uniformity']) });
});

after(async () => {
  await gateway?.dispose();
});

function header(file: string): Record<string, unknown> {
  const buf = readFileSync(file);
  const dict = dcmjs.data.DicomMessage.readFile(
    buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength),
    {
      untilTag: '7FE00010',
    },
  );
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict) as Record<string, unknown>;
}

/** Every spelling of a value that could leak: as stored, and a person name's parts and forms. */
function spellings(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  if (Array.isArray(value)) return value.flatMap(spellings);
  if (typeof value === 'object') {
    const alphabetic = (value as { Alphabetic?: string }).Alphabetic;
    return alphabetic ? spellings(alphabetic) : [];
  }
  const s = String(value).trim();
  const out = new Set([s]);
  for (const part of s.split(/[\^=]/)) if (part.length >= 4) out.add(part);
  if (/^\d{8}$/.test(s)) out.add(`${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6)}`);
  if (s.includes('^')) out.add(s.replace(/\^/g, ' ').trim());
  return [...out].filter((x) => x.length >= 4);
}

test('logs carry study and job ids, never patient name, ID or birth date', async () => {
  const h = header(FILE);
  const studyUid = h.StudyInstanceUID as string;
  const secrets = [...spellings(h.PatientName), ...spellings(h.PatientID), ...spellings(h.PatientBirthDate)];
  // The file must really hold all three, or this test proves nothing.
  assert.ok(spellings(h.PatientName).length > 0, 'the file has a PatientName');
  assert.ok(spellings(h.PatientID).length > 0, 'the file has a PatientID');
  assert.ok(spellings(h.PatientBirthDate).length > 0, 'the file has a PatientBirthDate');

  // The file is JPEG 2000 lossy: propose it as it is.
  const sent = await gateway.store([FILE], { args: ['-xw'] });
  assert.equal(sent.code, 0, sent.stderr);
  await waitFor(
    'the study to be done',
    async () => {
      const s = await gateway.api<{ state: string }>(`/api/studies/${studyUid}`).catch(() => undefined);
      return s?.state === 'done' ? s : undefined;
    },
    120_000,
  );
  // The report's delivery is logged after the study settles; wait for that line too.
  const log = await waitFor('the delivery log line', async () => {
    const text = await readFile(gateway.logPath, 'utf8');
    return text.includes('"event":"delivery.done"') ? text : undefined;
  });

  for (const secret of secrets)
    assert.ok(!log.toLowerCase().includes(secret.toLowerCase()), `the log contains patient data "${secret}"`);

  const lines = log
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(lines.length > 5, `${lines.length} JSON log lines`);
  const forStudy = lines.filter((l) => l.studyUid === studyUid);
  const events = new Set(forStudy.map((l) => String(l.event)));
  for (const e of ['routing.study.routed', 'inference.done', 'delivery.done'])
    assert.ok(events.has(e), `log event ${e}`);
  // The delivered object is named for what it is (this model writes an SR only).
  const delivered = forStudy.find((l) => l.event === 'delivery.done')!;
  assert.equal(delivered.kind, 'sr');
  assert.equal(delivered.msg, 'SR delivered');
  const inference = forStudy.find((l) => l.event === 'inference.done')!;
  assert.match(String(inference.jobId), new RegExp(`^infer\\|${studyUid.replace(/\./g, '\\.')}\\|`));
});
