// Association policy for the C-STORE SCP: which SOP classes we accept and in which transfer syntax.
// Instances are stored exactly as received, so we accept the sender's own choice among the syntaxes the
// worker can decode later, and never ask the sender to transcode.
import dimse from 'dcmjs-dimse';
import { INGEST_TRANSFER_SYNTAXES } from '../../dicom/transfer-syntax.ts';
import { MPPS_SOP_CLASS } from './mpps.ts';

const { SopClass, StorageClass } = dimse.constants;

export const VERIFICATION_SOP_CLASS = SopClass.Verification;

/** Transfer syntaxes stored as received (the ingest column of src/dicom/transfer-syntax.ts). */
export const STORED_TRANSFER_SYNTAXES = INGEST_TRANSFER_SYNTAXES;

// Storage classes dcmjs-dimse does not list but that reach an AI gateway in practice.
const EXTRA_STORAGE_CLASSES = [
  '1.2.840.10008.5.1.4.1.1.66.4', // Segmentation
  '1.2.840.10008.5.1.4.1.1.88.34', // Comprehensive 3D SR
  '1.2.840.10008.5.1.4.1.1.88.35', // Extensible SR
  '1.2.840.10008.5.1.4.1.1.88.59', // Key Object Selection
  '1.2.840.10008.5.1.4.1.1.11.1', // Grayscale Softcopy Presentation State
];

export const STORAGE_SOP_CLASSES: ReadonlySet<string> = new Set([
  ...Object.values(StorageClass as Record<string, string>),
  ...EXTRA_STORAGE_CLASSES,
]);

/**
 * Every standard storage SOP class lives under this root (PS3.4 Annex B.5 and PS3.6 Annex A), including
 * the ones dcmjs-dimse does not list (RT Dose/Plan/Structure Set, Enhanced XA, WSI, ...): accepted too.
 */
const STORAGE_ROOT = '1.2.840.10008.5.1.4.1.1.';

export function isStorageSopClass(uid: string): boolean {
  return STORAGE_SOP_CLASSES.has(uid) || (uid.startsWith(STORAGE_ROOT) && /^[0-9.]+$/.test(uid));
}

/** Verification and storage always; Modality Performed Procedure Step when the SCP serves it. */
export function isAcceptedAbstractSyntax(uid: string, opts: { mpps?: boolean } = {}): boolean {
  return (
    uid === VERIFICATION_SOP_CLASS || isStorageSopClass(uid) || (opts.mpps === true && uid === MPPS_SOP_CLASS)
  );
}

/**
 * Transfer syntax negotiation: each presentation context gets the sender's FIRST proposed syntax that we
 * store as received. Senders list their preference first (dcmtk: the file's own syntax, then uncompressed),
 * so lossless data stays lossless and nothing is transcoded on either side.
 */
export function chooseTransferSyntax(proposed: readonly string[]): string | undefined {
  return proposed.find((ts) => STORED_TRANSFER_SYNTAXES.has(ts));
}
