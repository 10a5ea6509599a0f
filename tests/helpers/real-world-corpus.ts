// A corpus of "hospital traffic" studies derived at test time from the real samples in
// ../shared/dicom-samples: each case takes a real image and changes it the way real equipment and RIS
// write things (legacy date formats, over-long text, patient names in legacy character sets, body part
// synonyms or none, missing geometry, several window values, no Rescale Slope, padding values, private
// tags, odd value lengths, frames over many fragments), as a study of its own. Each case declares what
// the gateway must make of it: a report, or a visible state with the reason. Nothing is committed; the
// files are written into a temporary directory with dcmtk (dcmodify), dcmjs and dcmjs-codecs.
import { randomBytes } from 'node:crypto';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import dcmjs from 'dcmjs';
import { uidFromName } from '../../src/dicom/uid.ts';
import { runTool } from './dicom-tools.ts';
import { encodedWith, writeFragmented, writePart10 as writeEncapsulated } from './fragmented.ts';
import { SHARED } from './gateway.ts';
import { replaceTopLevelValues, tagNumber } from './raw-elements.ts';

const SAMPLES = path.join(SHARED, 'dicom-samples');
/** Fuji CR chest PA, 440×440 MONOCHROME1, uncompressed; dotted dates and colon times already. */
export const FUJI_CHEST = path.join(SAMPLES, 'xray/cr-chest-mono1-fuji-gdcm-CR-MONO1-10-chest.dcm');
/** Agfa CR cervical spine, 16×16: below every model's minimum size. */
const AGFA_TINY = path.join(SAMPLES, 'xray/cr-cervical-lat-mono1-agfa-16x16.dcm');
const CT_SLICES = ['I10', 'I20', 'I30'].map((n) =>
  path.join(SAMPLES, `ct-series/philips-ingenuity-head-phantom-5mm/${n}.dcm`),
);
const RLE_LOSSLESS = '1.2.840.10008.1.2.5';

/** Model ids (manifests in models/) and the algorithm names their reports carry. */
export const CHEST_MODEL = 'squeezenet1_1-cxr-pneumonia';
export const UNIFORMITY_MODEL = 'image-uniformity';
export const CHEST_ALGORITHM = /SqueezeNet/;
export const UNIFORMITY_ALGORITHM = /Blank image detector/;

export type CorpusExpectation =
  /** An SR from the model whose algorithm name matches, in the PACS, dciodvfy-clean. */
  | {
      expect: 'report';
      algorithm: RegExp;
      /** The patient name bytes the report must carry; default: the source's, byte for byte. */
      patientName?: Buffer;
      /** A model that skipped images of the study, with the reason it gives. */
      skipped?: { model: string; reason: RegExp };
      /** A model that declined a series, with the reason routing gives. */
      declined?: { model: string; reason: RegExp };
    }
  /** No model takes the study: state 'no-model', the reason in its detail and its series decisions. */
  | { expect: 'no-model'; reason: RegExp }
  /** The study fails: state 'failed', the reason in its detail. */
  | { expect: 'failed'; reason: RegExp };

export interface CorpusCase {
  name: string;
  /** What real-world trait the case carries. */
  trait: string;
  /** The issue class it stands for: 1 legacy values, 2 fragments, 3 anatomy, 4 exclusive classes, 5 silence. */
  issueClass: 1 | 2 | 3 | 4 | 5;
  studyUid: string;
  files: string[];
  /** storescu arguments before the address, e.g. ['-xr'] to propose RLE for RLE files. */
  storeArgs?: string[];
  /** Calling AE title (default MODALITY1). */
  aet?: string;
  outcome: CorpusExpectation;
}

/** Calling AE title of the emergency room CR in the corpus: the routing rule assumes chest for it. */
export const ER_CR_AE = 'ER_CR';

/** Routing rules the corpus is meant to run under: the ER's CR without a body part is a chest. */
export const CORPUS_ROUTING_RULES = [
  {
    name: 'er-chest',
    match: { callingAE: ER_CR_AE, Modality: 'CR' },
    assume: { bodyPart: 'CHEST' },
    models: ['*'],
  },
  { name: 'everything', match: {}, models: ['*'] },
];

interface Edit {
  /** dcmodify arguments (-i/-m/-e ...), applied first. */
  modify?: string[];
  /** Then these top-level values, byte for byte (the element must exist: insert it with modify). */
  bytes?: [group: number, element: number, value: Buffer][];
  /** Keep odd lengths of `bytes` as they are (no padding). */
  oddLengths?: boolean;
  /** Then elements added through dcmjs (denaturalized: tag → { vr, Value }), the file rewritten by it. */
  elements?: Record<string, { vr: string; Value: unknown[] }>;
}

/** A new study, series and instance UID for each case (a fresh salt per corpus). */
function uids(salt: string, name: string, instance = 0) {
  return {
    study: uidFromName(`${salt}/${name}/study`),
    series: uidFromName(`${salt}/${name}/series`),
    instance: uidFromName(`${salt}/${name}/instance/${instance}`),
  };
}

async function dcmodify(file: string, args: string[]): Promise<void> {
  const r = await runTool('dcmodify', ['-nb', '-g', ...args, file]);
  if (r.code !== 0) throw new Error(`dcmodify ${args.join(' ')}: ${r.stderr}`);
}

/** Copies `source` into `dir` as a new instance of the case's study, with the edits applied. */
async function derive(
  dir: string,
  salt: string,
  name: string,
  source: string,
  edit: Edit = {},
  instance = 0,
): Promise<string> {
  const u = uids(salt, name, instance);
  const file = path.join(dir, `${name}-${instance}.dcm`);
  await copyFile(source, file);
  await dcmodify(file, [
    '-m',
    `(0020,000D)=${u.study}`,
    '-m',
    `(0020,000E)=${u.series}`,
    '-m',
    `(0008,0018)=${u.instance}`,
    ...(edit.modify ?? []),
  ]);
  if (edit.bytes?.length) {
    const values = new Map(edit.bytes.map(([g, e, v]) => [tagNumber(g, e), v]));
    await writeFile(file, replaceTopLevelValues(await readFile(file), values, { pad: !edit.oddLengths }));
  }
  if (edit.elements) {
    const bytes = await readFile(file);
    const message = dcmjs.data.DicomMessage.readFile(
      bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    );
    Object.assign(message.dict, edit.elements);
    await writeFile(file, Buffer.from(message.write({ allowInvalidVRLength: true }) as ArrayBuffer));
  }
  return file;
}

/** The Fuji chest's frame as RLE, cut into many fragments, with the offset table asked for. */
async function fragmented(
  dir: string,
  salt: string,
  name: string,
  table: 'none' | 'basic' | 'extended',
  fragments: number,
  corrupt = false,
): Promise<string> {
  const base = await derive(dir, salt, `${name}-base`, FUJI_CHEST);
  const source = await encodedWith(base, RLE_LOSSLESS);
  const u = uids(salt, name);
  const file = path.join(dir, `${name}-0.dcm`);
  // dcmjs writes no dotted dates: the sample's legacy date and time values in their DICOM form here.
  const attributes = {
    StudyInstanceUID: u.study,
    SeriesInstanceUID: u.series,
    SOPInstanceUID: u.instance,
    InstanceCreationDate: '19950720',
    InstanceCreationTime: '112207',
    AcquisitionDate: '19930224',
    AcquisitionTime: '175800',
  };
  if (corrupt) {
    // The RLE header says one segment at offset 64, then bytes that are no RLE stream at all.
    const garbage = new Uint8Array(4096).fill(0x81);
    garbage.set(new Uint8Array(new Uint32Array([1, 64, ...new Array(14).fill(0)]).buffer), 0);
    await writeEncapsulated(file, source, [[garbage]], table, attributes);
  } else {
    await writeFragmented(file, source, { fragments, table, attributes });
  }
  return file;
}

/**
 * The Fuji chest as an 8-bit RGB image (as a secondary capture of a viewer screen would be), in the
 * given series: the chest model takes only grey images, the uniformity model takes RGB too.
 */
async function rgbChest(dir: string, salt: string, name: string, instance: number): Promise<string> {
  const bytes = await readFile(FUJI_CHEST);
  const message = dcmjs.data.DicomMessage.readFile(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
  );
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict) as Record<string, unknown>;
  const grey = new Uint16Array((ds.PixelData as ArrayBuffer[])[0]!);
  const rgb = new Uint8Array(grey.length * 3);
  for (let i = 0; i < grey.length; i++) {
    // MONOCHROME1, 10 bits stored: invert into display grey.
    const v = 255 - Math.min(255, grey[i]! >> 2);
    rgb.fill(v, i * 3, i * 3 + 3);
  }
  const u = uids(salt, name, instance);
  Object.assign(ds, {
    StudyInstanceUID: u.study,
    SeriesInstanceUID: u.series,
    SOPInstanceUID: u.instance,
    InstanceNumber: instance + 1,
    PhotometricInterpretation: 'RGB',
    SamplesPerPixel: 3,
    PlanarConfiguration: 0,
    BitsAllocated: 8,
    BitsStored: 8,
    HighBit: 7,
    PixelData: [rgb.buffer],
    _vrMap: { PixelData: 'OB' },
  });
  for (const k of ['WindowCenter', 'WindowWidth']) delete ds[k];
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: ds.SOPClassUID,
    MediaStorageSOPInstanceUID: u.instance,
    TransferSyntaxUID: '1.2.840.10008.1.2.1',
    ImplementationClassUID: '2.25.2',
  };
  const dict = new dcmjs.data.DicomDict(dcmjs.data.DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(ds);
  const file = path.join(dir, `${name}-${instance}.dcm`);
  await writeFile(file, Buffer.from(dict.write({ allowInvalidVRLength: true }) as ArrayBuffer));
  return file;
}

const latin1 = (s: string) => Buffer.from(s, 'latin1');
const ascii = (s: string) => Buffer.from(s, 'ascii');
/** Inserts (or replaces) attributes through dcmodify. */
const insert = (...pairs: [string, string][]) => pairs.flatMap(([tag, value]) => ['-i', `${tag}=${value}`]);

/** Writes every case into `dir` and returns them, in a fixed order. */
export async function generateCorpus(dir: string): Promise<CorpusCase[]> {
  const salt = randomBytes(8).toString('hex');
  const chest = { expect: 'report', algorithm: CHEST_ALGORITHM } as const;
  const uniformity = { expect: 'report', algorithm: UNIFORMITY_ALGORITHM } as const;
  const one = async (
    name: string,
    trait: string,
    issueClass: CorpusCase['issueClass'],
    outcome: CorpusExpectation,
    source: string,
    edit: Edit,
    extra: Partial<CorpusCase> = {},
  ): Promise<CorpusCase> => ({
    name,
    trait,
    issueClass,
    outcome,
    studyUid: uids(salt, name).study,
    files: [await derive(dir, salt, name, source, edit)],
    ...extra,
  });
  const charset = (name: string, charsetValue: string, patientName: Buffer) =>
    one(name, `patient name in ${charsetValue || '(none)'}`, 1, chest, FUJI_CHEST, {
      modify: insert(['(0008,0005)', 'X'], ['(0010,0010)', 'X']),
      bytes: [
        [0x0008, 0x0005, ascii(charsetValue)],
        [0x0010, 0x0010, patientName],
      ],
    });
  const bodyPart = (name: string, value: string | undefined, extraModify: string[] = [], extra = {}) =>
    one(
      name,
      value === undefined ? 'Body Part Examined absent' : `Body Part Examined "${value}"`,
      3,
      chest,
      FUJI_CHEST,
      {
        modify: [
          ...(value === undefined ? ['-e', '(0018,0015)'] : insert(['(0018,0015)', value])),
          ...extraModify,
        ],
      },
      extra,
    );
  const ctSeries = async (
    name: string,
    trait: string,
    edits: Edit[],
    outcome: CorpusExpectation = uniformity,
  ): Promise<CorpusCase> => ({
    name,
    trait,
    issueClass: 1,
    outcome,
    studyUid: uids(salt, name).study,
    files: await Promise.all(
      CT_SLICES.map((s, i) => derive(dir, salt, name, s, edits[i] ?? edits[0] ?? {}, i)),
    ),
  });

  const overlongName = `${'Vandenberghe-'.repeat(5)}Longname^Anne`; // 78 characters
  const cases: Promise<CorpusCase>[] = [
    // (1) Legacy values: each becomes a report whose copied attributes are valid.
    one('legacy-dates', 'DA 1997.04.24 / 1997-04-24, TM 12:30:45', 1, chest, FUJI_CHEST, {
      modify: insert(
        ['(0008,0020)', '1997.04.24'],
        ['(0010,0030)', '1997-04-24'],
        ['(0008,0030)', '12:30:45'],
      ),
    }),
    one(
      'overlong-text',
      'LO, SH and PN longer than their VR allows',
      1,
      { ...chest, patientName: ascii(overlongName.slice(0, 64)) },
      FUJI_CHEST,
      {
        modify: insert(
          ['(0008,1030)', 'X'],
          ['(0008,0050)', 'X'],
          ['(0010,0010)', 'X'],
          ['(0010,0020)', 'X'],
        ),
        bytes: [
          [0x0008, 0x1030, ascii(`CHEST PA AND LATERAL ${'WITH COMPARISON TO PRIOR '.repeat(3)}`)],
          [0x0008, 0x0050, ascii('ACC-2024-0001234567')],
          [0x0010, 0x0010, ascii(overlongName)],
          [0x0010, 0x0020, ascii(`PID-${'0123456789'.repeat(7)}`)],
        ],
      },
    ),
    charset('charset-latin1', 'ISO_IR 100', latin1('Müller^Jürgen')),
    charset('charset-utf8', 'ISO_IR 192', Buffer.from('Ñandú^José', 'utf8')),
    charset('charset-gb18030', 'GB18030', Buffer.from([0xd5, 0xc5, 0x5e, 0xc8, 0xfd])), // 张^三
    charset('charset-jis', 'ISO 2022 IR 87', latin1('\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B')), // 山田^太郎
    charset(
      'charset-jis-ext',
      '\\ISO 2022 IR 87',
      latin1('Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B'),
    ),
    one('window-multi', 'several Window Center/Width values', 1, chest, FUJI_CHEST, {
      modify: insert(['(0028,1050)', '550\\400\\700'], ['(0028,1051)', '1024\\800\\1200']),
    }),
    one('pixel-padding', 'Pixel Padding Value', 1, chest, FUJI_CHEST, {
      modify: insert(['(0028,0120)', '0']),
    }),
    one('private-tags', 'private creator and private elements', 1, chest, FUJI_CHEST, {
      elements: {
        '00290010': { vr: 'LO', Value: ['ACME MEDICAL 1.0'] },
        '00291010': { vr: 'LO', Value: ['VENDOR-SPECIFIC-VALUE'] },
        '00291011': { vr: 'OB', Value: [new Uint8Array([1, 2, 3, 4, 0xff, 0xfe]).buffer] },
        '00291012': { vr: 'UN', Value: [new Uint8Array([0x41, 0x42, 0x43, 0x44]).buffer] },
      },
    }),
    one('odd-lengths', 'odd-length values, unpadded', 1, chest, FUJI_CHEST, {
      modify: insert(['(0008,1030)', 'X'], ['(0008,0080)', 'X'], ['(0010,0020)', 'X']),
      bytes: [
        [0x0008, 0x1030, ascii('CHEST')],
        [0x0008, 0x0080, ascii('St. Elsewhere')],
        [0x0010, 0x0020, ascii('P123')], // even, for contrast
      ],
      oddLengths: true,
    }),
    ctSeries('ct-missing-geometry', 'a slice without Image Position/Orientation', [
      {},
      { modify: ['-e', '(0020,0032)', '-e', '(0020,0037)'] },
      {},
    ]),
    ctSeries('ct-no-rescale-slope', 'Rescale Intercept without Rescale Slope', [
      { modify: ['-e', '(0028,1053)'] },
    ]),
    ctSeries('ct-window-multi', 'CT with three Window Center/Width pairs', [
      { modify: insert(['(0028,1050)', '40\\400\\-600'], ['(0028,1051)', '80\\2000\\1500']) },
    ]),
    // (2) Frames over many fragments, with each kind of offset table.
    ...(['basic', 'extended', 'none'] as const).map(async (table, i) => ({
      name: `fragments-${table}`,
      trait: `RLE frame in ${9 + i * 4} fragments, ${table === 'none' ? 'no' : table} offset table`,
      issueClass: 2 as const,
      outcome: chest,
      studyUid: uids(salt, `fragments-${table}`).study,
      files: [await fragmented(dir, salt, `fragments-${table}`, table, 9 + i * 4)],
      storeArgs: ['-xr'],
    })),
    // (3) Body part synonyms, empty and absent: chest radiographs reach the chest model.
    bodyPart('body-thorax', 'THORAX'),
    bodyPart('body-torax', 'torax'),
    bodyPart('body-pa-chest', 'PA CHEST'),
    bodyPart('body-empty-description', '', insert(['(0008,103E)', 'Thorax pa'])),
    bodyPart('body-absent-er-rule', undefined, [], { aet: ER_CR_AE }),
    // Absent with nothing else to go on: the chest model declines (visibly), the blank detector reports.
    one(
      'body-absent-no-evidence',
      'Body Part Examined absent, no other evidence',
      5,
      {
        ...uniformity,
        declined: { model: CHEST_MODEL, reason: /bodyPart: "" not in \[CHEST\]/ },
      },
      FUJI_CHEST,
      { modify: ['-e', '(0018,0015)'] },
    ),
    // (5) Silence made visible.
    one('tiny-image', '16×16 image', 5, { expect: 'no-model', reason: /rows: 16 < 64/ }, AGFA_TINY, {}),
    one(
      'modality-xc',
      'modality no model takes (XC)',
      5,
      { expect: 'no-model', reason: /modality: "XC" not in/ },
      FUJI_CHEST,
      { modify: insert(['(0008,0060)', 'XC']) },
    ),
    (async (): Promise<CorpusCase> => ({
      name: 'rgb-in-series',
      trait: 'an RGB capture in a chest series',
      issueClass: 5,
      outcome: {
        ...chest,
        skipped: { model: CHEST_MODEL, reason: /photometric RGB not accepted/ },
      },
      studyUid: uids(salt, 'rgb-in-series').study,
      files: [
        await derive(dir, salt, 'rgb-in-series', FUJI_CHEST, {}, 0),
        await rgbChest(dir, salt, 'rgb-in-series', 1),
      ],
    }))(),
    (async (): Promise<CorpusCase> => ({
      name: 'corrupt-rle',
      trait: 'RLE data that is no RLE stream',
      issueClass: 5,
      outcome: { expect: 'failed', reason: /none of the 1 images could be used/ },
      studyUid: uids(salt, 'corrupt-rle').study,
      files: [await fragmented(dir, salt, 'corrupt-rle', 'basic', 1, true)],
      storeArgs: ['-xr'],
    }))(),
  ];
  return Promise.all(cases);
}
