// The console's building blocks: data loading, errors, tables, pages, confirmation dialogs and formatting.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, type ApiClient } from '@anodyne/client/api';

/** What every page gets: the signed-in client and who is signed in. */
export interface Ctx {
  api: ApiClient;
  username: string;
  admin: boolean;
  go: (hash: string) => void;
}

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  reload: () => void;
}

/** Loads data on mount and when `deps` change, again every `everyMs` if given; keeps the last good data on a failed reload. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], everyMs?: number): Loaded<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (d) => {
        if (!live) return;
        setData(d);
        setError(undefined);
      },
      (e: unknown) => live && setError(e),
    );
    const timer = everyMs ? setTimeout(() => setTick((t) => t + 1), everyMs) : undefined;
    return () => {
      live = false;
      if (timer) clearTimeout(timer);
    };
  }, [...deps, tick]);
  return { data, error, reload: () => setTick((t) => t + 1) };
}

/** An error as the API said it: its code and message (the same words the CLI prints). */
export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  const text =
    error instanceof ApiError ? `${error.code}: ${error.message}` : error instanceof Error ? error.message : 'something went wrong';
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

/** A page: its title (document title and the one h1, focused on arrival for screen readers) and actions. */
export function Page({ title, actions, children }: { title: string; actions?: ComponentChildren; children: ComponentChildren }) {
  const h1 = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · Anodyne`;
    h1.current?.focus();
  }, [title]);
  return (
    <section aria-labelledby="page-title">
      <div class="page-head">
        <h1 id="page-title" tabIndex={-1} ref={h1}>
          {title}
        </h1>
        {actions ? <div class="actions">{actions}</div> : null}
      </div>
      {children}
    </section>
  );
}

export interface Column<R> {
  label: string;
  cell: (r: R) => ComponentChildren;
}

/** A data table with a caption (read out, visually hidden if asked), header cells with scope, and a line when empty. */
export function Table<R>({
  caption,
  columns,
  rows,
  empty,
  hideCaption,
}: {
  caption: string;
  columns: Column<R>[];
  rows: R[] | undefined;
  empty: string;
  hideCaption?: boolean;
}) {
  if (!rows) return <p aria-busy="true">Loading {caption.toLowerCase()}…</p>;
  return (
    <div class="table-wrap">
      <table>
        <caption class={hideCaption ? 'visually-hidden' : ''}>{caption}</caption>
        <thead>
          <tr>
            {columns.map((c) => (
              <th scope="col" key={c.label}>
                {c.label}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 ? (
            <tr>
              <td colSpan={columns.length}>{empty}</td>
            </tr>
          ) : (
            rows.map((r, i) => (
              <tr key={i}>
                {columns.map((c) => (
                  <td key={c.label} data-label={c.label}>
                    {c.cell(r)}
                  </td>
                ))}
              </tr>
            ))
          )}
        </tbody>
      </table>
    </div>
  );
}

/**
 * A confirmation in a modal dialog (focus moves in, Escape cancels). With `typeToConfirm` the
 * confirm button stays disabled until that word is typed (deleting a cluster).
 */
export function Confirm({
  title,
  body,
  confirmLabel,
  danger,
  typeToConfirm,
  onConfirm,
  onClose,
}: {
  title: string;
  body: ComponentChildren;
  confirmLabel: string;
  danger?: boolean;
  typeToConfirm?: string;
  onConfirm: () => Promise<void>;
  onClose: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [typed, setTyped] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  useEffect(() => {
    ref.current?.showModal();
  }, []);
  const ok = !typeToConfirm || typed === typeToConfirm;
  return (
    <dialog ref={ref} aria-labelledby="confirm-title" onClose={onClose}>
      <form
        method="dialog"
        onSubmit={(e) => {
          e.preventDefault();
          if (!ok || busy) return;
          setBusy(true);
          onConfirm().then(
            () => ref.current?.close(),
            (err: unknown) => {
              setBusy(false);
              setError(err);
            },
          );
        }}
      >
        <h2 id="confirm-title">{title}</h2>
        <div>{body}</div>
        {typeToConfirm ? (
          <label>
            Type <strong>{typeToConfirm}</strong> to confirm
            <input value={typed} onInput={(e) => setTyped(e.currentTarget.value)} autoComplete="off" />
          </label>
        ) : null}
        <ErrorNote error={error} />
        <div class="actions">
          <button type="button" class="secondary" onClick={() => ref.current?.close()}>
            Cancel
          </button>
          <button type="submit" class={danger ? 'danger' : ''} disabled={!ok || busy}>
            {busy ? 'Working…' : confirmLabel}
          </button>
        </div>
      </form>
    </dialog>
  );
}

/**
 * A page that is one table of what `load` returns (again every `everyMs`, if given), with the
 * load's error above it: the shape of most of the console's read-only pages.
 */
export function ListPage<R>(props: {
  title: string;
  caption: string;
  showCaption?: boolean;
  load: () => Promise<R[]>;
  everyMs?: number;
  empty: string;
  columns: Column<R>[];
  actions?: ComponentChildren;
}) {
  const rows = useLoad(props.load, [], props.everyMs);
  return (
    <Page title={props.title} actions={props.actions}>
      <ErrorNote error={rows.error} />
      <Table caption={props.caption} hideCaption={!props.showCaption} rows={rows.data} empty={props.empty} columns={props.columns} />
    </Page>
  );
}

export const when = (iso: string | null | undefined): string => (iso ? new Date(iso).toLocaleString() : '—');

export function seconds(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 90 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** "3 running, 1 failing" from a cluster's health counts; "no VMs yet" when there are none. */
export function healthSummary(h: Record<string, number>): string {
  const parts = Object.entries(h)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`);
  return parts.length ? parts.join(', ') : 'no VMs yet';
}

/** A status word with its colour class (and the word itself, so colour is never the only cue). */
export function Status({ text }: { text: string }) {
  const tone = /fail|error|missing|unresponsive|denied/.test(text)
    ? 'bad'
    : /progress|processing|queued|pending|started|starting/.test(text)
      ? 'busy'
      : 'good';
  return <span class={`status ${tone}`}>{text}</span>;
}
