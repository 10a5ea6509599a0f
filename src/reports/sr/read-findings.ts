// The findings table a reader sees in one of our TID 1500 SRs, read back from the SR's own content tree
// (not from the model's output): per measurement group its finding concept, Certainty of Finding, the
// qualitative evaluation (Present/Absent), a volume, or each exclusive class's probability.
import dcmjs from 'dcmjs';
import type { FindingRow } from '../../pipeline/study-index.ts';

type Item = Record<string, unknown>;

const asArray = (v: unknown): Item[] =>
  v === undefined || v === null ? [] : Array.isArray(v) ? (v as Item[]) : [v as Item];
const first = (v: unknown): Item | undefined => asArray(v)[0];
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** Measurement Group (DCM 125007), Finding (DCM 121071), Certainty of Finding (DCM 111012). */
const MEASUREMENT_GROUP = '125007';
const FINDING = '121071';
const CERTAINTY = '111012';

function code(item: Item | undefined): { value: string; scheme: string; meaning: string } | undefined {
  if (!item) return undefined;
  return {
    value: str(item.CodeValue),
    scheme: str(item.CodingSchemeDesignator),
    meaning: str(item.CodeMeaning),
  };
}

function walk(items: Item[], visit: (item: Item) => void, depth = 0): void {
  // Our SRs nest four levels deep; the bound keeps a hostile file from recursing without end.
  if (depth > 16) return;
  for (const item of items) {
    visit(item);
    walk(asArray(item.ContentSequence), visit, depth + 1);
  }
}

/** The findings table of a TID 1500 SR (Part-10 bytes), one row per measurement group. */
export function readSrFindings(part10: Buffer): FindingRow[] {
  const buffer = part10.buffer.slice(part10.byteOffset, part10.byteOffset + part10.byteLength) as ArrayBuffer;
  const dict = dcmjs.data.DicomMessage.readFile(buffer, { ignoreErrors: true });
  const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict) as Item;
  const rows: FindingRow[] = [];
  walk(asArray(dataset.ContentSequence), (item) => {
    if (
      item.ValueType !== 'CONTAINER' ||
      code(first(item.ConceptNameCodeSequence))?.value !== MEASUREMENT_GROUP
    )
      return;
    const row: FindingRow = { meaning: '' };
    const classes: { meaning: string; probability: number }[] = [];
    for (const child of asArray(item.ContentSequence)) {
      const name = code(first(child.ConceptNameCodeSequence));
      const value = code(first(child.ConceptCodeSequence));
      if (name?.value === FINDING && value) {
        row.code = value;
        row.meaning = value.meaning;
      } else if (child.ValueType === 'NUM') {
        const m = first(child.MeasuredValueSequence);
        const n = Number(m?.NumericValue);
        const unit = code(first(m?.MeasurementUnitsCodeSequence))?.value;
        if (!Number.isFinite(n)) continue;
        if (unit === 'mL' || unit === 'ml') row.volumeMl = n;
        else if (name?.value === CERTAINTY) row.probability = unit === '%' ? n / 100 : n;
        else if (unit === '%') classes.push({ meaning: name?.meaning ?? '', probability: n / 100 });
      } else if (child.ValueType === 'CODE' && value && name?.value !== FINDING) {
        // The qualitative evaluation: the finding concept valued Present or Absent.
        row.presence = value.meaning;
      }
    }
    if (classes.length) row.classes = classes;
    rows.push(row);
  });
  return rows;
}

/** The most probable row (the first when none states a probability). */
export function topFinding(rows: FindingRow[]): FindingRow | undefined {
  let top: FindingRow | undefined;
  for (const r of rows) if (!top || (r.probability ?? -1) > (top.probability ?? -1)) top = r;
  return top;
}
