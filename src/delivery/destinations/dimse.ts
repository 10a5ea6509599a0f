// DIMSE destination: one C-STORE per object over its own association (dcmjs-dimse Client), with
// optional DICOM TLS. Association rejections, network errors and timeouts are transient; C-STORE
// failure statuses are classified by PS3.4 Annex B: A7xx (out of resources) is transient, others
// permanent. Warnings (Bxxx, 0001) count as stored.
import { readFile } from 'node:fs/promises';
import dcmjs from 'dcmjs';
import dimse from 'dcmjs-dimse';
import {
  checkDeliveryInput,
  PermanentDeliveryError,
  TransientDeliveryError,
  type DeliveryMeta,
  type DeliveryReceipt,
  type Destination,
} from '../destination.ts';
import { statusHex } from '../../dicom/status.ts';
import { errorMessage } from '../../observability/error-message.ts';

const { Client, Dataset } = dimse;
const { CStoreRequest } = dimse.requests;

export interface DimseOptions {
  host: string;
  port: number;
  /** Called AE title. */
  aeTitle: string;
  callingAeTitle: string;
  timeoutMs: number;
  tls?: { caFile?: string; certFile?: string; keyFile?: string; rejectUnauthorized: boolean };
}

type SecurityOptions = { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized: boolean };

export class DimseDestination implements Destination {
  readonly kind = 'dimse';
  private security?: Promise<SecurityOptions>;

  constructor(
    readonly name: string,
    private readonly opts: DimseOptions,
  ) {}

  async deliver(part10: Buffer, meta: DeliveryMeta): Promise<DeliveryReceipt> {
    const { sopInstanceUid } = checkDeliveryInput(this.name, part10, meta);
    const dataset = toDimseDataset(this.name, part10);
    const securityOptions = this.opts.tls ? await this.tlsOptions() : undefined;
    const { status, comment } = await this.store(dataset, securityOptions);
    const hex = statusHex(status);
    const where = `C-STORE to ${this.name} (${this.opts.aeTitle}@${this.opts.host}:${this.opts.port})`;
    const warnings: string[] = [];
    if (status === 0x0000) {
      // stored
    } else if (status === 0x0001 || (status & 0xf000) === 0xb000) {
      warnings.push(`C-STORE warning status ${hex}${comment ? `: ${comment}` : ''}`);
    } else if ((status & 0xff00) === 0xa700) {
      throw new TransientDeliveryError(
        `${where}: out of resources, status ${hex} ${comment}`.trim(),
        this.name,
      );
    } else {
      throw new PermanentDeliveryError(
        `${where}: refused ${sopInstanceUid}, status ${hex} ${comment}`.trim(),
        this.name,
      );
    }
    return {
      destination: this.name,
      kind: this.kind,
      location: `dicom://${this.opts.aeTitle}@${this.opts.host}:${this.opts.port}`,
      warnings,
    };
  }

  private tlsOptions(): Promise<SecurityOptions> {
    const tls = this.opts.tls!;
    const load = async (file?: string) => (file ? readFile(file) : undefined);
    this.security ??= (async () => ({
      ca: await load(tls.caFile),
      cert: await load(tls.certFile),
      key: await load(tls.keyFile),
      rejectUnauthorized: tls.rejectUnauthorized,
    }))();
    // A missing certificate file is an admin's fix away: retry rather than fail the report.
    return this.security.catch((e: unknown) => {
      this.security = undefined;
      throw new TransientDeliveryError(
        `C-STORE to ${this.name}: cannot read TLS files: ${errorMessage(e)}`,
        this.name,
      );
    });
  }

  private store(
    dataset: InstanceType<typeof Dataset>,
    securityOptions: SecurityOptions | undefined,
  ): Promise<{ status: number; comment: string }> {
    const where = `C-STORE to ${this.name} (${this.opts.aeTitle}@${this.opts.host}:${this.opts.port})`;
    return new Promise((resolve, reject) => {
      const client = new Client();
      const request = new CStoreRequest(dataset);
      let response: { status: number; comment: string } | undefined;
      let failure: Error | undefined;
      request.on('response', (r: InstanceType<typeof dimse.responses.CStoreResponse>) => {
        const status = r.getStatus();
        // Pending is not a C-STORE status; anything else is the final answer.
        response = { status, comment: (r.getErrorComment() ?? '').replace(/[^\x20-\x7e]/g, ' ').trim() };
      });
      client.addRequest(request);
      client.on('associationRejected', (result: { result: number; source: number; reason: number }) => {
        failure = new TransientDeliveryError(
          `${where}: association rejected (result ${result.result}, source ${result.source}, reason ${result.reason})`,
          this.name,
        );
      });
      client.on('networkError', (e: Error) => {
        failure ??= new TransientDeliveryError(`${where}: ${e.message}`, this.name, undefined, undefined, {
          cause: e,
        });
      });
      client.on('closed', () => {
        if (response) resolve(response);
        else reject(failure ?? new TransientDeliveryError(`${where}: no C-STORE response`, this.name));
      });
      try {
        client.send(this.opts.host, this.opts.port, this.opts.callingAeTitle, this.opts.aeTitle, {
          connectTimeout: this.opts.timeoutMs,
          associationTimeout: this.opts.timeoutMs,
          pduTimeout: this.opts.timeoutMs,
          ...(securityOptions ? { securityOptions } : {}),
        });
      } catch (e) {
        reject(new TransientDeliveryError(`${where}: ${errorMessage(e)}`, this.name));
      }
    });
  }
}

/** The Part-10 object as a dcmjs-dimse Dataset in its own transfer syntax (SR/SEG: uncompressed). */
function toDimseDataset(destination: string, part10: Buffer): InstanceType<typeof Dataset> {
  try {
    const ab = part10.buffer.slice(part10.byteOffset, part10.byteOffset + part10.byteLength);
    const dict = dcmjs.data.DicomMessage.readFile(ab);
    const metaTs = (dict.meta as Record<string, { Value?: string[] }>)['00020010']?.Value?.[0];
    if (typeof metaTs !== 'string') throw new Error('no transfer syntax in the file meta information');
    const elements = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict) as Record<string, unknown>;
    return new Dataset(elements, metaTs.replace(/\0/g, '').trim());
  } catch (e) {
    throw new PermanentDeliveryError(
      `C-STORE to ${destination}: object cannot be parsed: ${errorMessage(e)}`,
      destination,
    );
  }
}
