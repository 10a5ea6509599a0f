// What every Chromium test of the console shares: Debian's chromium, headless, and the two screen sizes
// the layout rules hold at.
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-sync',
];

/** The sizes the console must fit without horizontal scroll. */
export const SIZES = [
  { width: 1280, height: 800 },
  { width: 1920, height: 1080 },
];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

/** Horizontal overflow of the page, in pixels (0 = no horizontal scroll). */
export function horizontalOverflow(page: Page): Promise<number> {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}

/** An HTTP Basic authorization header value. */
export function basicAuth(u: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${u.username}:${u.password}`).toString('base64')}`;
}
