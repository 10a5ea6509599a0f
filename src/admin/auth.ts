// Admin HTTP access: loopback without credentials by default; anything else requires basic users or
// bearer tokens, each with role 'read' (look), 'operator' (look and act through the console) or 'admin'
// (also bull-board's own actions). Failed logins are rate-limited per client address.
import { findCredential, sameSecret } from '../util/same-secret.ts';
import { isIP } from 'node:net';
import type { NextFunction, Request, Response } from 'express';
import { ConfigError } from '../config/load.ts';
import type { GatewayConfig } from '../config/schema.ts';
import { audit } from '../pipeline/audit-trail.ts';
import { adminEvents } from './events.ts';
import { isForwarded } from '../util/forwarded.ts';

export type AdminRole = 'read' | 'operator' | 'admin';
export type AdminAuth = NonNullable<GatewayConfig['http']['auth']>;

export interface Principal {
  name: string;
  role: AdminRole;
  via: 'basic' | 'bearer' | 'loopback';
  /** May see identifying data (accession number, patient ID and name); each view is audited. */
  phi: boolean;
}

/** A user's PHI permission: as configured, else allowed for role admin only. */
export function phiAllowed(role: AdminRole, configured: boolean | undefined): boolean {
  return configured ?? role === 'admin';
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h.startsWith('::ffff:127.');
}

/** Refuses a non-loopback admin listener without credentials: the console can reprocess and cancel. */
export function assertAuthForBinding(http: GatewayConfig['http']): void {
  if (isLoopbackHost(http.host) || http.auth) return;
  throw new ConfigError(
    `http.host is ${http.host}, not loopback: configure http.auth (basic users or bearer tokens) ` +
      `or set GATEWAY_ADMIN_TOKEN, or bind http.host to 127.0.0.1`,
  );
}

/** The principal the Authorization header proves, in time independent of which user it names. */
export function authenticate(auth: AdminAuth, header: string | undefined): Principal | undefined {
  if (!header) return undefined;
  const [scheme, value = ''] = header.split(/\s+/, 2);
  if (scheme?.toLowerCase() === 'bearer') {
    // Check every token, so the time taken does not tell which one nearly matched.
    let found: Principal | undefined;
    for (const t of auth.bearer)
      if (sameSecret(t.token, value))
        found = { name: t.name, role: t.role, via: 'bearer', phi: phiAllowed(t.role, t.phi) };
    return found;
  }
  if (scheme?.toLowerCase() === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return undefined;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const u = findCredential(
      auth.basic,
      user,
      password,
      (e) => e.user,
      (e) => e.password,
    );
    return u && { name: u.user, role: u.role, via: 'basic', phi: phiAllowed(u.role, u.phi) };
  }
  return undefined;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

function hostnameOf(hostHeader: string): string {
  try {
    return new URL(`http://${hostHeader}`).hostname;
  } catch {
    return '';
  }
}

/**
 * Refuses what only a hostile web page makes a browser send: without auth, a Host that is not loopback
 * (DNS rebinding onto 127.0.0.1); and an action whose Origin is another site (cross-site request
 * forgery, since browsers send basic credentials on their own). Clients like curl send no Origin.
 */
function browserAttack(req: Request, authConfigured: boolean): string | undefined {
  const host = req.headers.host ?? '';
  // A reverse proxy on this host makes every outside request look local: a forwarded request never counts
  // as loopback, so without http.auth it is refused.
  if (!authConfigured && isForwarded(req.headers))
    return 'a proxied request (X-Forwarded-*, Forwarded) needs http.auth: it is not a loopback caller';
  if (!authConfigured && !isLoopbackHost(hostnameOf(host)))
    return 'without http.auth the console answers only to loopback host names';
  const origin = req.headers.origin;
  if (!SAFE_METHODS.has(req.method) && origin !== undefined) {
    let originHost = '';
    try {
      originHost = new URL(origin).host;
    } catch {
      // 'null' or garbage: not this site
    }
    if (originHost !== host) return 'cross-origin actions are refused';
  }
  return undefined;
}

/** Failed logins allowed per client address and window before it is answered 429. */
export const LOGIN_FAILURES_ALLOWED = 10;
export const LOGIN_WINDOW_MS = 60_000;
/** Addresses tracked at most (a flood of spoofed sources must not grow memory without bound). */
const MAX_TRACKED_ADDRESSES = 10_000;

/**
 * Failed logins per client address in a fixed window. Past the allowance every attempt from that address
 * (the right password included, else the guessing would go on) is refused until the window ends.
 */
export class LoginLimiter {
  private readonly failures = new Map<string, { count: number; windowEnds: number }>();

  constructor(
    private readonly allowed = LOGIN_FAILURES_ALLOWED,
    private readonly windowMs = LOGIN_WINDOW_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds to wait when the address is locked out, else undefined. */
  retryAfterSeconds(address: string): number | undefined {
    const entry = this.failures.get(address);
    if (entry === undefined) return undefined;
    const left = entry.windowEnds - this.now();
    if (left <= 0) {
      this.failures.delete(address);
      return undefined;
    }
    return entry.count >= this.allowed ? Math.ceil(left / 1000) : undefined;
  }

  recordFailure(address: string): void {
    const now = this.now();
    const entry = this.failures.get(address);
    if (entry !== undefined && entry.windowEnds > now) {
      entry.count++;
      return;
    }
    if (this.failures.size >= MAX_TRACKED_ADDRESSES) this.prune(now);
    this.failures.set(address, { count: 1, windowEnds: now + this.windowMs });
  }

  private prune(now: number): void {
    for (const [address, entry] of this.failures) if (entry.windowEnds <= now) this.failures.delete(address);
    // Still full: forget the oldest entries (Map keeps insertion order).
    for (const address of this.failures.keys()) {
      if (this.failures.size < MAX_TRACKED_ADDRESSES) break;
      this.failures.delete(address);
    }
  }
}

/** Whether the role may take actions through the console and its API. */
export function canAct(role: AdminRole): boolean {
  return role === 'operator' || role === 'admin';
}

/**
 * Sets res.locals.principal, or answers 401/403/429. Without configured auth (only allowed on loopback) the
 * caller is a local admin. Reading needs any role; anything else (actions) needs 'operator' or 'admin'.
 */
export function requireAuth(auth: AdminAuth | undefined, limiter = new LoginLimiter()) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const refusal = browserAttack(req, auth !== undefined);
    if (refusal) {
      adminEvents.crossOriginRefused(req.method, req.path, req.headers.origin, refusal);
      res.status(403).json({ error: refusal });
      return;
    }
    const address = req.socket.remoteAddress ?? '';
    const presented = req.headers.authorization !== undefined;
    if (auth && presented) {
      const wait = limiter.retryAfterSeconds(address);
      if (wait !== undefined) {
        adminEvents.loginRateLimited(req.method, req.path, address);
        res.setHeader('Retry-After', String(wait));
        res.status(429).json({ error: `too many failed logins; try again in ${wait} s` });
        return;
      }
    }
    const principal: Principal | undefined = auth
      ? authenticate(auth, req.headers.authorization)
      : { name: 'local', role: 'admin', via: 'loopback', phi: true };
    if (!principal) {
      // A request without credentials is a browser's first visit, not a guess.
      if (presented) limiter.recordFailure(address);
      adminEvents.unauthorized(req.method, req.path, req.socket.remoteAddress);
      res.setHeader('WWW-Authenticate', 'Basic realm="dicom-ai-gateway", charset="UTF-8"');
      res.status(401).json({ error: 'authentication required (basic or bearer)' });
      return;
    }
    res.locals.principal = principal;
    if (!SAFE_METHODS.has(req.method) && !canAct(principal.role)) {
      adminEvents.forbidden(req.method, req.path, principal.name);
      void audit.record({
        type: 'action',
        actor: principal.name,
        role: principal.role,
        action: `${req.method} ${req.path}`,
        target: req.originalUrl,
        result: 'refused',
        detail: 'role read',
      });
      res
        .status(403)
        .json({ error: `'${principal.name}' has role read: actions need role operator or admin` });
      return;
    }
    next();
  };
}

export function principalOf(res: Response): Principal {
  return (
    (res.locals.principal as Principal | undefined) ?? {
      name: 'unknown',
      role: 'read',
      via: 'loopback',
      phi: false,
    }
  );
}

/** bull-board's own actions (edit job data, clean, obliterate) go past the console's checks: role admin only. */
export function requireAdminForActions(area: string) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const who = principalOf(res);
    if (SAFE_METHODS.has(req.method) || who.role === 'admin') return next();
    adminEvents.forbidden(req.method, req.path, who.name, `${area} actions need role admin`);
    void audit.record({
      type: 'action',
      actor: who.name,
      role: who.role,
      action: `${area} ${req.method}`,
      target: req.originalUrl,
      result: 'refused',
      detail: `role ${who.role}`,
    });
    res.status(403).json({ error: `'${who.name}' has role ${who.role}: ${area} actions need role admin` });
  };
}
