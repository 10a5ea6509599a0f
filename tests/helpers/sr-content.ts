// Reads what a radiologist's viewer would show from an SR: measurement groups with their finding,
// probability and qualitative result, and the instances the report references.
import dcmjs from 'dcmjs';

type Item = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface ReportGroup {
  finding?: string;
  probability?: number;
  volumeMl?: number;
  qualitative?: string;
  algorithmName?: string;
  algorithmVersion?: string;
  /** Exclusive classes: each class's probability (0-1) by its code meaning. */
  classes?: Record<string, number>;
}

export interface ReportContent {
  dataset: Item;
  groups: ReportGroup[];
  referencedSopInstanceUids: string[];
}

const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const conceptOf = (item: Item): string | undefined =>
  asArray<Item>(item.ConceptNameCodeSequence)[0]?.CodeValue;

function walk(items: Item[], visit: (item: Item) => void): void {
  for (const item of items) {
    visit(item);
    walk(asArray(item.ContentSequence), visit);
  }
}

export function readReport(part10: ArrayBuffer | Buffer): ReportContent {
  const buffer =
    part10 instanceof ArrayBuffer
      ? part10
      : part10.buffer.slice(part10.byteOffset, part10.byteOffset + part10.byteLength);
  // ignoreErrors: dcmjs refuses several character set values (e.g. '\ISO 2022 IR 87') and reads on.
  const dict = dcmjs.data.DicomMessage.readFile(buffer, { ignoreErrors: true });
  const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict) as Item;
  const groups: ReportGroup[] = [];
  const referenced = new Set<string>();
  walk(asArray(dataset.ContentSequence), (item) => {
    if (item.ValueType === 'IMAGE') {
      for (const ref of asArray<Item>(item.ReferencedSOPSequence))
        referenced.add(ref.ReferencedSOPInstanceUID);
    }
    if (item.ValueType === 'CONTAINER' && conceptOf(item) === '125007') {
      const group: ReportGroup = {};
      for (const child of asArray<Item>(item.ContentSequence)) {
        const concept = conceptOf(child);
        const code = asArray<Item>(child.ConceptCodeSequence)[0];
        const num = asArray<Item>(child.MeasuredValueSequence)[0];
        if (concept === '121071') group.finding = code?.CodeMeaning;
        else if (child.ValueType === 'NUM' && num) {
          const unit = asArray<Item>(num.MeasurementUnitsCodeSequence)[0]?.CodeValue;
          const value = Number(num.NumericValue);
          if (unit === 'ml' || unit === 'mL') group.volumeMl = value;
          else if (concept === '111012' || unit !== '%')
            group.probability = unit === '%' ? value / 100 : value;
          else {
            // A NUM named by a class's concept: that class's probability (exclusive classes).
            const name = asArray<Item>(child.ConceptNameCodeSequence)[0]?.CodeMeaning as string;
            group.classes = { ...group.classes, [name]: value / 100 };
          }
        } else if (child.ValueType === 'CODE' && code) group.qualitative = code.CodeMeaning;
        else if (concept === '111001') group.algorithmName = child.TextValue;
        else if (concept === '111003') group.algorithmVersion = child.TextValue;
      }
      groups.push(group);
    }
  });
  return { dataset, groups, referencedSopInstanceUids: [...referenced] };
}

/** Splits a multipart/related WADO-RS answer into its parts' bodies. */
export function multipartParts(body: Buffer, contentType: string): Buffer[] {
  const boundary = /boundary="?([^";]+)"?/i.exec(contentType)?.[1];
  if (!boundary) throw new Error(`no boundary in ${contentType}`);
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: Buffer[] = [];
  let pos = body.indexOf(delimiter);
  while (pos !== -1) {
    const next = body.indexOf(delimiter, pos + delimiter.length);
    if (next === -1) break;
    const part = body.subarray(pos + delimiter.length, next);
    const headerEnd = part.indexOf('\r\n\r\n');
    if (headerEnd !== -1) parts.push(part.subarray(headerEnd + 4, part.length - 2));
    pos = next;
  }
  return parts;
}
