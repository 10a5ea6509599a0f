// Coded concepts used by the TID 1500 report (PS3.16 Annex D DCM codes, SNOMED CT, UCUM).
import type { CodedConcept } from '../../pipeline/findings.ts';

const dcm = (value: string, meaning: string): CodedConcept => ({ value, scheme: 'DCM', meaning });
const sct = (value: string, meaning: string): CodedConcept => ({ value, scheme: 'SCT', meaning });
const ucum = (value: string, meaning: string): CodedConcept => ({ value, scheme: 'UCUM', meaning });

export const CODES = {
  // TID 1500 root and sections
  imagingMeasurementReport: dcm('126000', 'Imaging Measurement Report'),
  imageLibrary: dcm('111028', 'Image Library'),
  imageLibraryGroup: dcm('126200', 'Image Library Group'),
  imagingMeasurements: dcm('126010', 'Imaging Measurements'),
  measurementGroup: dcm('125007', 'Measurement Group'),
  procedureReported: dcm('121058', 'Procedure reported'),
  // TID 1204 language
  languageOfContent: dcm('121049', 'Language of Content Item and Descendants'),
  english: { value: 'en', scheme: 'RFC5646', meaning: 'English' } satisfies CodedConcept,
  // TID 1002 / 1004 observer context
  observerType: dcm('121005', 'Observer Type'),
  device: dcm('121007', 'Device'),
  deviceObserverUid: dcm('121012', 'Device Observer UID'),
  deviceObserverName: dcm('121013', 'Device Observer Name'),
  deviceObserverManufacturer: dcm('121014', 'Device Observer Manufacturer'),
  deviceObserverModelName: dcm('121015', 'Device Observer Model Name'),
  // TID 1501 measurement group
  trackingIdentifier: dcm('112039', 'Tracking Identifier'),
  trackingUid: dcm('112040', 'Tracking Unique Identifier'),
  finding: dcm('121071', 'Finding'),
  // TID 4019 algorithm identification
  algorithmName: dcm('111001', 'Algorithm Name'),
  algorithmVersion: dcm('111003', 'Algorithm Version'),
  algorithmParameters: dcm('111002', 'Algorithm Parameters'),
  // Classifier output: CID 6048 / TID 4104 row 12 use "Certainty of Finding" in percent (0-100)
  // for a CAD score; DCMR has no generic "probability" concept.
  certaintyOfFinding: dcm('111012', 'Certainty of Finding'),
  // Qualitative result against the model's threshold (CID 230-style presence values).
  present: sct('52101004', 'Present'),
  absent: sct('2667000', 'Absent'),
  volume: sct('118565006', 'Volume'),
  // Procedure reported: a CT-specific LOINC code where we know the modality, else generic.
  ctUnspecified: {
    value: '25045-6',
    scheme: 'LN',
    meaning: 'CT unspecified body region',
  } satisfies CodedConcept,
  mrUnspecified: {
    value: '25056-3',
    scheme: 'LN',
    meaning: 'MR unspecified body region',
  } satisfies CodedConcept,
  imagingProcedure: sct('363679005', 'Imaging procedure'),
  // Units
  percent: ucum('%', 'Percent'),
  // UCUM case-sensitive form; DCMR also uses 'ml', but 'mL' is UCUM's preferred print symbol.
  milliliter: ucum('mL', 'milliliter'),
} as const;

/**
 * Coding schemes PS3.16 Table 8-1 lists as standard: a document using any other (e.g. a model
 * manifest's local codes) must identify it in CodingSchemeIdentificationSequence.
 */
export const STANDARD_CODING_SCHEMES = new Set([
  'DCM',
  'SCT',
  'SRT',
  'UCUM',
  'LN',
  'RFC5646',
  'FMA',
  'RADLEX',
  'NCIt',
  'ICD10',
  'UMLS',
  'MSH',
  'ACR',
  'I10',
  'I9C',
  'RXNORM',
  'NEU',
  'UBERON',
  'DCMUID',
  'ISO3166_1',
  'ISO639_1',
  'ISO639_2',
]);
