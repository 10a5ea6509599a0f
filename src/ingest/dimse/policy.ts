// Association policy for the C-STORE SCP: which SOP classes we accept and in which transfer syntax.
// Instances are stored exactly as received, so we accept the sender's own choice among the syntaxes the
// worker can decode later, and never ask the sender to transcode.
import dimse from 'dcmjs-dimse';

const { SopClass, StorageClass } = dimse.constants;

export const VERIFICATION_SOP_CLASS = SopClass.Verification;

/** Transfer syntaxes stored as received: uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000, RLE. */
export const STORED_TRANSFER_SYNTAXES: ReadonlySet<string> = new Set([
  '1.2.840.10008.1.2', // implicit VR little endian
  '1.2.840.10008.1.2.1', // explicit VR little endian
  '1.2.840.10008.1.2.2', // explicit VR big endian (retired, still sent by old modalities)
  '1.2.840.10008.1.2.1.99', // deflated explicit VR little endian
  '1.2.840.10008.1.2.4.50', // JPEG baseline
  '1.2.840.10008.1.2.4.51', // JPEG extended
  '1.2.840.10008.1.2.4.57', // JPEG lossless
  '1.2.840.10008.1.2.4.70', // JPEG lossless SV1
  '1.2.840.10008.1.2.4.80', // JPEG-LS lossless
  '1.2.840.10008.1.2.4.81', // JPEG-LS near-lossless
  '1.2.840.10008.1.2.4.90', // JPEG 2000 lossless
  '1.2.840.10008.1.2.4.91', // JPEG 2000
  '1.2.840.10008.1.2.5', // RLE lossless
]);

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

export function isAcceptedAbstractSyntax(uid: string): boolean {
  return uid === VERIFICATION_SOP_CLASS || STORAGE_SOP_CLASSES.has(uid);
}

/** The sender's first proposed transfer syntax that we store as received, or undefined. */
export function chooseTransferSyntax(proposed: readonly string[]): string | undefined {
  return proposed.find((ts) => STORED_TRANSFER_SYNTAXES.has(ts));
}
