// Logging with pino that never writes secrets: secret-named keys redacted at any depth, registered secret values masked.
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger } from 'pino';

/** Keys whose values are secrets wherever they appear in a log record, at any depth. */
const SECRET_KEY =
  /pass(word|phrase)?$|secret|token|private_?key|privatekey|credential|authorization|cookie|^key$|_key$|api_?key|client_?secret/i;

export const REDACTED = '[REDACTED]';

/**
 * Secret values known at run time (generated passwords, tokens). Strings in log records
 * that contain one are masked even when the key name looks harmless. Shared by every
 * logger made from the same registry.
 */
export class SecretRegistry {
  private readonly values = new Set<string>();

  add(value: string): void {
    // Very short values would mask ordinary words; generated secrets are long.
    if (value.length >= 8) this.values.add(value);
  }

  mask(text: string): string {
    let out = text;
    for (const v of this.values) {
      if (out.includes(v)) out = out.split(v).join(REDACTED);
    }
    return out;
  }

  get size(): number {
    return this.values.size;
  }
}

function redactValue(value: unknown, secrets: SecretRegistry | undefined, depth: number, seen: WeakSet<object>): unknown {
  if (typeof value === 'string') return secrets ? secrets.mask(value) : value;
  if (value === null || typeof value !== 'object') return value;
  if (depth > 8 || seen.has(value)) return '[…]';
  seen.add(value);
  if (Array.isArray(value)) return value.map((v) => redactValue(v, secrets, depth + 1, seen));
  if (value instanceof Error) {
    return {
      type: value.name,
      message: secrets ? secrets.mask(value.message) : value.message,
      ...redactObject(value as unknown as Record<string, unknown>, secrets, depth + 1, seen),
    };
  }
  return redactObject(value as Record<string, unknown>, secrets, depth + 1, seen);
}

function redactObject(
  obj: Record<string, unknown>,
  secrets: SecretRegistry | undefined,
  depth: number,
  seen: WeakSet<object>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    out[k] = SECRET_KEY.test(k) && v !== undefined && v !== null && v !== '' ? REDACTED : redactValue(v, secrets, depth, seen);
  }
  return out;
}

/** Redacts secret-named keys at any depth and masks registered secret values. */
export function redactForLog(value: Record<string, unknown>, secrets?: SecretRegistry): Record<string, unknown> {
  return redactObject(value, secrets, 0, new WeakSet());
}

export interface LoggerFactoryOptions {
  name?: string;
  level?: string;
  /** Where records go; defaults to stdout. Tests pass a stream they read back. */
  destination?: DestinationStream;
  secrets?: SecretRegistry;
}

/**
 * Makes a pino logger that never writes secrets: keys that name secrets are replaced by
 * `[REDACTED]` at any depth, and values registered in `secrets` are masked in every string,
 * the message included.
 */
export function createLogger(options: LoggerFactoryOptions = {}): Logger {
  const secrets = options.secrets;
  const pinoOptions: LoggerOptions = {
    level: options.level ?? process.env['ANODYNE_LOG_LEVEL'] ?? 'info',
    base: options.name ? { name: options.name } : {},
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: {
      level: (label) => ({ level: label }),
      log: (record) => redactForLog(record, secrets),
    },
    hooks: secrets
      ? {
          logMethod(args, method) {
            const masked = args.map((a) => (typeof a === 'string' ? secrets.mask(a) : a)) as Parameters<typeof method>;
            method.apply(this, masked);
          },
        }
      : {},
  };
  return options.destination ? pino(pinoOptions, options.destination) : pino(pinoOptions);
}

/** A logger that drops everything, for tests that do not look at logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
