// Authorization headers for DICOMweb destinations: none, HTTP basic, a static bearer token, or an
// OAuth2 client-credentials grant (RFC 6749 §4.4) whose access token is cached until shortly before
// it expires. Token-endpoint failures are classified like delivery failures.
import { isTransientHttpStatus, PermanentDeliveryError, TransientDeliveryError } from '../destination.ts';
import { errorMessage } from '../../observability/error-message.ts';
import { readBodyCapped, ResponseTooLargeError } from './response-body.ts';

export type HttpAuthConfig =
  | { type: 'none' }
  | { type: 'basic'; user: string; password: string }
  | { type: 'bearer'; token: string }
  | { type: 'oauth2'; tokenUrl: string; clientId: string; clientSecret: string; scope?: string };

export interface HttpAuth {
  /** The Authorization header value, or undefined for none. */
  header(): Promise<string | undefined>;
  /** Forget a cached token (the server answered 401 with it). */
  invalidate(): void;
  readonly type: HttpAuthConfig['type'];
}

/** Refresh this long before the server-announced expiry so a token never expires mid-request. */
const EXPIRY_MARGIN_MS = 30_000;
const MAX_TOKEN_RESPONSE = 64 * 1024;

export type FetchLike = (url: string, init: RequestInit & { dispatcher?: unknown }) => Promise<Response>;

export function createHttpAuth(
  destination: string,
  config: HttpAuthConfig,
  opts: { fetch: FetchLike; timeoutMs: number; dispatcher?: unknown; now?: () => number },
): HttpAuth {
  switch (config.type) {
    case 'none':
      return { type: 'none', header: async () => undefined, invalidate: () => undefined };
    case 'basic': {
      const value = `Basic ${Buffer.from(`${config.user}:${config.password}`, 'utf8').toString('base64')}`;
      return { type: 'basic', header: async () => value, invalidate: () => undefined };
    }
    case 'bearer':
      return { type: 'bearer', header: async () => `Bearer ${config.token}`, invalidate: () => undefined };
    case 'oauth2':
      return new ClientCredentials(destination, config, opts);
  }
}

class ClientCredentials implements HttpAuth {
  readonly type = 'oauth2';
  private cached?: { token: string; expiresAt: number };
  /** Concurrent deliveries share one token request. */
  private pending?: Promise<string>;
  private readonly now: () => number;

  constructor(
    private readonly destination: string,
    private readonly config: Extract<HttpAuthConfig, { type: 'oauth2' }>,
    private readonly opts: { fetch: FetchLike; timeoutMs: number; dispatcher?: unknown; now?: () => number },
  ) {
    this.now = opts.now ?? Date.now;
  }

  async header(): Promise<string> {
    if (this.cached && this.cached.expiresAt > this.now()) return `Bearer ${this.cached.token}`;
    this.pending ??= this.requestToken().finally(() => {
      this.pending = undefined;
    });
    return `Bearer ${await this.pending}`;
  }

  invalidate(): void {
    this.cached = undefined;
  }

  private async requestToken(): Promise<string> {
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (this.config.scope) form.set('scope', this.config.scope);
    // RFC 6749 §2.3.1: client_secret_basic, with the form-encoded id and secret.
    const basic = Buffer.from(
      `${encodeURIComponent(this.config.clientId)}:${encodeURIComponent(this.config.clientSecret)}`,
    ).toString('base64');
    let res: Response;
    let text: string;
    try {
      res = await this.opts.fetch(this.config.tokenUrl, {
        method: 'POST',
        headers: {
          Authorization: `Basic ${basic}`,
          'Content-Type': 'application/x-www-form-urlencoded',
          Accept: 'application/json',
        },
        body: form.toString(),
        redirect: 'manual',
        signal: AbortSignal.timeout(this.opts.timeoutMs),
        dispatcher: this.opts.dispatcher,
      });
      text = await readBodyCapped(res, MAX_TOKEN_RESPONSE, 'refuse');
    } catch (e) {
      if (e instanceof ResponseTooLargeError)
        throw new TransientDeliveryError(
          `OAuth2 token endpoint of ${this.destination}: token ${e.message}`,
          this.destination,
        );
      throw new TransientDeliveryError(
        `OAuth2 token request for ${this.destination} failed: ${errorMessage(e)}`,
        this.destination,
        undefined,
        undefined,
        { cause: e },
      );
    }
    if (isTransientHttpStatus(res.status)) {
      throw new TransientDeliveryError(
        `OAuth2 token endpoint of ${this.destination}: HTTP ${res.status}`,
        this.destination,
        res.status,
      );
    }
    if (!res.ok) {
      // invalid_client / unauthorized_client: only an admin fixing the configuration helps.
      throw new PermanentDeliveryError(
        `OAuth2 token endpoint of ${this.destination} refused the client credentials: HTTP ${res.status} ${errorCode(text)}`,
        this.destination,
        res.status,
      );
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const token = (body as { access_token?: unknown } | undefined)?.access_token;
    const tokenType = (body as { token_type?: unknown } | undefined)?.token_type;
    if (typeof token !== 'string' || token.length === 0 || /[\r\n]/.test(token)) {
      throw new PermanentDeliveryError(
        `OAuth2 token endpoint of ${this.destination} answered without a usable access_token`,
        this.destination,
        res.status,
      );
    }
    if (typeof tokenType === 'string' && tokenType.toLowerCase() !== 'bearer') {
      throw new PermanentDeliveryError(
        `OAuth2 token endpoint of ${this.destination} issued a '${tokenType}' token; only bearer tokens are supported`,
        this.destination,
        res.status,
      );
    }
    const expiresIn = Number((body as { expires_in?: unknown }).expires_in);
    // No expires_in: reuse for a minute, then ask again (RFC 6749 leaves the lifetime to the server).
    const lifetimeMs = Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn * 1000 : 60_000;
    this.cached = { token, expiresAt: this.now() + Math.max(0, lifetimeMs - EXPIRY_MARGIN_MS) };
    return token;
  }
}

function errorCode(text: string): string {
  try {
    const e = (JSON.parse(text) as { error?: unknown }).error;
    return typeof e === 'string' ? `(${e.replace(/[^\x20-\x7e]/g, '').slice(0, 64)})` : '';
  } catch {
    return '';
  }
}
