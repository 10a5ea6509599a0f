// The imaging library's errors, in a module of their own so that decode.ts and the modules it uses
// (encapsulation.ts) can throw them without importing one another. decode.ts re-exports both.

export class DecodeError extends Error {
  override name = 'DecodeError';
}

/** The file is sound but no decoder here handles its transfer syntax (e.g. MPEG-4 video). */
export class UnsupportedTransferSyntaxError extends DecodeError {
  override name = 'UnsupportedTransferSyntaxError';
  constructor(readonly transferSyntaxUid: string) {
    super(`transfer syntax ${transferSyntaxUid} is not supported by the pixel decoders available`);
  }
}
