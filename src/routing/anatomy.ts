// What part of the body a series shows, from whatever the images say about it. Real traffic leaves Body
// Part Examined empty, or fills it with a vendor's or a language's word (THORAX, TÓRAX, CHEST_PA, KOPF),
// so every answer is normalised to one of DICOM's defined terms (PS3.16 Annex L, "Correspondence of
// Anatomic Region Codes and Body Part Examined Defined Terms"), and the evidence is tried in order:
//   1. Body Part Examined (0018,0015), through the synonym table below;
//   2. Anatomic Region Sequence (0008,2218): its SNOMED CT / SNOMED RT code, or else its Code Meaning;
//   3. whole-word keywords (admin-editable, config routing.anatomyKeywords) in Series Description,
//      Protocol Name, then Study Description;
//   4. (in rules.ts) a routing rule's `assume.bodyPart`, when 1–3 found nothing.
// A Body Part Examined value the table does not know is kept as it is (upper-cased) when 2 and 3 find
// nothing either, so a manifest or rule naming a local term still matches it.

import type { CodedEntry } from '../dicom/part10.ts';

interface Region {
  /** The DICOM defined term (Body Part Examined, CS). */
  term: string;
  /** SNOMED CT concept ids (scheme SCT), current and retired. */
  sct: string[];
  /** SNOMED RT / SNM3 codes (schemes SRT, SNM3), as older equipment writes them. */
  srt: string[];
  /** Vendor, abbreviation and language variants, written plainly (folded like every value). */
  synonyms: string[];
}

// Terms chest and head/brain models depend on carry the most variants; the rest keep the codes DICOM
// gives them so that an image coded, say, KNEE is recognised as a knee and not guessed at.
const REGIONS: Region[] = [
  {
    term: 'CHEST',
    sct: ['43799004', '51185008', '39607008'],
    srt: ['T-D3000', 'T-28000'],
    synonyms: [
      'THORAX',
      'THORAKS',
      'TORAX',
      'TORACE',
      'TORACICO',
      'BRUSTKORB',
      'POITRINE',
      'PECHO',
      'PEITO',
      'BORST',
      'BROSTKORG',
      'RINTAKEHA',
      'KLATKA',
      'HRUDNIK',
      'MELLKAS',
      // Lung is a term of its own in Annex L (39607008, T-28000); routing counts it as chest, which is
      // what chest radiograph models want.
      'LUNG',
      'LUNGS',
      'LUNGE',
      'LUNGEN',
      'POUMON',
      'POUMONS',
      'POLMONE',
      'POLMONI',
      'PULMON',
      'PULMONES',
      'CXR',
      'CHEST PA',
      'PA CHEST',
      'THORAX PA',
      'CHEST AP',
      'AP CHEST',
      'THORAX AP',
    ],
  },
  {
    term: 'HEAD',
    sct: ['69536005', '89546000'],
    srt: ['T-D1100', 'T-11100'],
    synonyms: [
      // Skull is a term of its own in Annex L (89546000, T-11100); routing counts it as head.
      'SKULL',
      'CRANIUM',
      'KRANIUM',
      'KOPF',
      'SCHADEL',
      'SCHAEDEL',
      'TETE',
      'CRANE',
      'CRANEO',
      'CRANIO',
      'CABEZA',
      'CABECA',
      'TESTA',
      'HOOFD',
      'SCHEDEL',
    ],
  },
  {
    term: 'BRAIN',
    sct: ['12738006'],
    srt: ['T-A0100'],
    synonyms: ['CERVEAU', 'GEHIRN', 'HIRN', 'CEREBRO', 'CERVELLO', 'ENCEPHALON', 'ENCEPHALE', 'HERSENEN'],
  },
  { term: 'HEADNECK', sct: ['774007'], srt: ['T-D1000'], synonyms: ['HEAD NECK', 'HEAD AND NECK'] },
  { term: 'NECK', sct: ['45048000'], srt: ['T-D1600'], synonyms: ['HALS', 'COLLO', 'CUELLO', 'COU'] },
  {
    term: 'ABDOMEN',
    sct: ['818981001', '113345001'],
    srt: ['T-D4000'],
    synonyms: ['ABD', 'ABDO', 'ABDOMINAL', 'BAUCH', 'ADDOME', 'ABDOME', 'BUIK', 'VENTRE'],
  },
  {
    term: 'PELVIS',
    sct: ['816092008', '12921003'],
    srt: ['T-D6000'],
    synonyms: ['BECKEN', 'BASSIN', 'BACINO', 'BEKKEN', 'PELVIS'],
  },
  {
    term: 'ABDOMENPELVIS',
    sct: ['818982008', '416949008'],
    srt: ['R-FAB57'],
    synonyms: ['ABDOMEN PELVIS', 'ABDOMEN AND PELVIS', 'ABD PELVIS'],
  },
  {
    term: 'CHESTABDOMEN',
    sct: ['416550000'],
    srt: ['R-FAB55'],
    synonyms: ['CHEST ABDOMEN', 'CHEST AND ABDOMEN', 'THORAX ABDOMEN'],
  },
  {
    term: 'CHESTABDPELVIS',
    sct: ['416775004'],
    srt: ['R-FAB56'],
    synonyms: ['CHEST ABDOMEN PELVIS', 'CAP', 'TAP'],
  },
  { term: 'NECKCHEST', sct: ['417437006'], srt: ['R-FAB52'], synonyms: ['NECK CHEST'] },
  { term: 'HEART', sct: ['80891009'], srt: ['T-32000'], synonyms: ['HERZ', 'COEUR', 'CORAZON', 'CUORE'] },
  { term: 'BREAST', sct: ['76752008'], srt: ['T-04000'], synonyms: ['MAMMA', 'SEIN', 'MAMA'] },
  { term: 'LIVER', sct: ['10200004'], srt: ['T-62000'], synonyms: ['LEBER', 'FOIE', 'HIGADO', 'FEGATO'] },
  { term: 'KIDNEY', sct: ['64033007'], srt: ['T-71000'], synonyms: ['NIERE', 'REIN', 'RINON', 'RENE'] },
  { term: 'SPINE', sct: ['421060004', '280717001'], srt: ['T-D0146'], synonyms: ['RACHIS', 'WIRBELSAULE'] },
  { term: 'CSPINE', sct: ['122494005'], srt: ['T-11501'], synonyms: ['C SPINE', 'CERVICAL SPINE', 'HWS'] },
  {
    term: 'TSPINE',
    sct: ['122495006'],
    srt: ['T-11502'],
    synonyms: ['T SPINE', 'THORACIC SPINE', 'DORSAL SPINE', 'BWS'],
  },
  { term: 'LSPINE', sct: ['122496007'], srt: ['T-11503'], synonyms: ['L SPINE', 'LUMBAR SPINE', 'LWS'] },
  { term: 'SSPINE', sct: ['54735007'], srt: ['T-11AD0'], synonyms: ['SACRUM'] },
  { term: 'SHOULDER', sct: ['16982005'], srt: ['T-D2220'], synonyms: ['SCHULTER', 'EPAULE', 'HOMBRO'] },
  { term: 'CLAVICLE', sct: ['51299004'], srt: ['T-12310'], synonyms: [] },
  { term: 'ARM', sct: ['40983000'], srt: ['T-D8200'], synonyms: [] },
  { term: 'HUMERUS', sct: ['85050009'], srt: ['T-12410'], synonyms: ['OBERARM'] },
  { term: 'ELBOW', sct: ['127949000', '16953009', '76248009'], srt: ['T-D8300'], synonyms: ['ELLBOGEN'] },
  { term: 'FOREARM', sct: ['14975008'], srt: [], synonyms: ['UNTERARM'] },
  { term: 'WRIST', sct: ['8205005', '74670003'], srt: [], synonyms: ['HANDGELENK', 'POIGNET'] },
  { term: 'HAND', sct: ['85562004'], srt: ['T-D8700'], synonyms: [] },
  { term: 'FINGER', sct: ['7569003'], srt: ['T-D8800'], synonyms: [] },
  { term: 'HIP', sct: ['29836001', '24136001'], srt: ['T-15710'], synonyms: ['HUFTE', 'HUEFTE', 'HANCHE'] },
  { term: 'FEMUR', sct: ['71341001'], srt: ['T-12710'], synonyms: [] },
  { term: 'THIGH', sct: ['68367000'], srt: ['T-D9100'], synonyms: ['OBERSCHENKEL'] },
  {
    term: 'KNEE',
    sct: ['72696002', '49076000'],
    srt: ['T-D9200'],
    synonyms: ['KNIE', 'GENOU', 'RODILLA', 'GINOCCHIO', 'JOELHO'],
  },
  { term: 'PATELLA', sct: ['64234005'], srt: ['T-12730'], synonyms: [] },
  { term: 'LEG', sct: ['30021000'], srt: ['T-D9400'], synonyms: ['LOW EXM', 'LOWEXM', 'UNTERSCHENKEL'] },
  { term: 'ANKLE', sct: ['70258002', '344001'], srt: ['T-15750'], synonyms: ['SPRUNGGELENK', 'CHEVILLE'] },
  { term: 'FOOT', sct: ['56459004'], srt: ['T-D9700'], synonyms: ['FUSS', 'PIED', 'VOET'] },
  { term: 'EXTREMITY', sct: ['66019005'], srt: ['T-D0300'], synonyms: ['EXTREMETY', 'EXTREMIDAD'] },
  { term: 'WHOLEBODY', sct: ['38266002'], srt: ['T-D0010'], synonyms: ['WHOLE BODY', 'ENTIRE BODY'] },
];

/** Coding schemes whose codes the table holds (SNOMED CT, SNOMED RT and its SNM3 spelling). */
const SNOMED_SCHEMES = new Set(['SCT', 'SRT', 'SNM3', '99SDM']);

/**
 * Words that say how an image was taken, not what it shows: dropped from a Body Part Examined value the
 * table does not know as a whole ('CHEST PA PORTABLE' is a chest).
 */
const VIEW_WORDS = new Set([
  'PA',
  'AP',
  'LAT',
  'LATERAL',
  'LL',
  'RL',
  'OBL',
  'OBLIQUE',
  'ERECT',
  'UPRIGHT',
  'STANDING',
  'SUPINE',
  'PRONE',
  'DECUBITUS',
  'PORTABLE',
  'PORT',
  'FRONTAL',
  'VIEW',
  'VIEWS',
  'LEFT',
  'RIGHT',
  'BILATERAL',
  'BILAT',
  'LT',
  'RT',
  '1V',
  '2V',
]);

/**
 * Upper case without accents, every run of anything other than letters and digits ('_', '-', spaces,
 * punctuation) one space, trimmed: 'tórax', 'TORAX', 'Chest_PA' and 'CHEST-PA ' compare alike.
 */
export function foldAnatomyText(value: string): string {
  return value
    .normalize('NFD')
    .replace(/\p{M}+/gu, '')
    .toUpperCase()
    .replace(/ß/g, 'SS')
    .replace(/[^\p{L}\p{N}]+/gu, ' ')
    .trim();
}

const BY_NAME = new Map<string, string>();
const BY_CODE = new Map<string, string>();
for (const region of REGIONS) {
  for (const name of [region.term, ...region.synonyms]) {
    const key = foldAnatomyText(name);
    if (!BY_NAME.has(key)) BY_NAME.set(key, region.term);
  }
  for (const code of [...region.sct, ...region.srt]) BY_CODE.set(code.toUpperCase(), region.term);
}

/**
 * The defined term a Body Part Examined value (or a code meaning, or a term in a manifest or rule) stands
 * for, or undefined when the table does not know it. Tried whole, then without view words.
 */
export function normaliseBodyPart(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const key = foldAnatomyText(value);
  if (key === '') return undefined;
  const whole = BY_NAME.get(key) ?? BY_NAME.get(key.replace(/ /g, ''));
  if (whole !== undefined) return whole;
  const words = key.split(' ').filter((w) => !VIEW_WORDS.has(w));
  if (words.length === 0 || words.length === key.split(' ').length) return undefined;
  return BY_NAME.get(words.join(' '));
}

/** A body-part term as routing compares it: the defined term when known, else the folded value. */
export function canonicalBodyPart(value: string): string {
  return normaliseBodyPart(value) ?? foldAnatomyText(value);
}

/** The defined term an Anatomic Region code stands for (SNOMED CT or RT; else its Code Meaning). */
export function bodyPartFromRegion(region: CodedEntry | undefined): string | undefined {
  if (region === undefined) return undefined;
  const scheme = region.scheme?.trim().toUpperCase();
  if (region.value !== undefined && (scheme === undefined || SNOMED_SCHEMES.has(scheme))) {
    const term = BY_CODE.get(region.value.trim().toUpperCase());
    if (term !== undefined) return term;
  }
  return normaliseBodyPart(region.meaning);
}

/** Region → keywords, as config routing.anatomyKeywords holds them. */
export type AnatomyKeywordMap = Readonly<Record<string, readonly string[]>>;

interface CompiledKeyword {
  region: string;
  /** As written (for the record), and as folded words. */
  keyword: string;
  words: string[];
}

const compiledMaps = new WeakMap<AnatomyKeywordMap, CompiledKeyword[]>();

function compile(map: AnatomyKeywordMap): CompiledKeyword[] {
  const cached = compiledMaps.get(map);
  if (cached) return cached;
  const compiled: CompiledKeyword[] = [];
  for (const [region, keywords] of Object.entries(map)) {
    const term = canonicalBodyPart(region);
    if (term === '') continue;
    for (const keyword of keywords) {
      const folded = foldAnatomyText(keyword);
      if (folded !== '') compiled.push({ region: term, keyword: folded, words: folded.split(' ') });
    }
  }
  compiledMaps.set(map, compiled);
  return compiled;
}

export interface KeywordHit {
  region: string;
  keyword: string;
}

/**
 * The one region whose keywords occur in `text` as whole words ('PA' does not match 'SPAIN'), or
 * undefined when none does or when several regions do ('CHEST KNEE' is no answer). A hit inside a longer
 * hit does not count: 'THORACIC SPINE' is a spine even if 'THORACIC' were a chest word.
 */
export function keywordRegion(text: string | undefined, map: AnatomyKeywordMap): KeywordHit | undefined {
  if (text === undefined) return undefined;
  const folded = foldAnatomyText(text);
  if (folded === '') return undefined;
  const tokens = folded.split(' ');
  const hits: { hit: KeywordHit; start: number; end: number }[] = [];
  for (const kw of compile(map)) {
    const n = kw.words.length;
    for (let i = 0; i + n <= tokens.length; i++) {
      let all = true;
      for (let j = 0; j < n && all; j++) all = tokens[i + j] === kw.words[j];
      if (all) hits.push({ hit: { region: kw.region, keyword: kw.keyword }, start: i, end: i + n });
    }
  }
  const kept = hits.filter(
    (h) =>
      !hits.some((o) => o !== h && o.start <= h.start && o.end >= h.end && o.end - o.start > h.end - h.start),
  );
  const regions = new Set(kept.map((h) => h.hit.region));
  if (regions.size !== 1) return undefined;
  // The longest keyword of the region names the evidence.
  return kept.reduce((a, b) => (b.end - b.start > a.end - a.start ? b : a)).hit;
}

/** Where a series' body part came from. */
export type BodyPartSource =
  'bodyPartExamined' | 'anatomicRegion' | `keyword:${string}` | 'rule-assumed' | 'none';

export interface ResolvedAnatomy {
  /** A defined term (or an unknown Body Part Examined value, upper-cased); undefined when nothing said. */
  bodyPart?: string;
  source: BodyPartSource;
  /** For a keyword: the attribute it was found in. */
  attribute?: 'SeriesDescription' | 'ProtocolName' | 'StudyDescription';
  /** For 'rule-assumed': the rule that asserted it. */
  rule?: string;
}

export interface AnatomyEvidence {
  bodyPartExamined?: string;
  anatomicRegion?: CodedEntry;
  seriesDescription?: string;
  protocolName?: string;
  studyDescription?: string;
}

/** Steps 1–3 of the order above (a rule's assumption is applied by the caller). */
export function resolveAnatomy(evidence: AnatomyEvidence, keywords: AnatomyKeywordMap): ResolvedAnatomy {
  const examined = evidence.bodyPartExamined?.trim() ?? '';
  const fromExamined = normaliseBodyPart(examined);
  if (fromExamined !== undefined) return { bodyPart: fromExamined, source: 'bodyPartExamined' };
  const fromRegion = bodyPartFromRegion(evidence.anatomicRegion);
  if (fromRegion !== undefined) return { bodyPart: fromRegion, source: 'anatomicRegion' };
  const texts = [
    ['SeriesDescription', evidence.seriesDescription],
    ['ProtocolName', evidence.protocolName],
    ['StudyDescription', evidence.studyDescription],
  ] as const;
  for (const [attribute, text] of texts) {
    const hit = keywordRegion(text, keywords);
    if (hit !== undefined) return { bodyPart: hit.region, source: `keyword:${hit.keyword}`, attribute };
  }
  const unknown = foldAnatomyText(examined);
  if (unknown !== '') return { bodyPart: unknown, source: 'bodyPartExamined' };
  return { source: 'none' };
}
