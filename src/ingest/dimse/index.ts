export { startDimseServer } from './server.ts';
export type { DimseServer, DimseServerOptions, DimseTlsOptions, InstanceRecord } from './types.ts';
export {
  STATUS_CANNOT_UNDERSTAND,
  STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS,
  STATUS_OUT_OF_RESOURCES,
} from '../accept.ts';
export { STORAGE_SOP_CLASSES, STORED_TRANSFER_SYNTAXES, chooseTransferSyntax } from './policy.ts';
export { AssociationPolicy, type PeerSettings } from './association-policy.ts';
export { MPPS_SOP_CLASS, type MppsHandler } from './mpps.ts';
