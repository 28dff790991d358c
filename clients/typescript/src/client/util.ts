/** Small async utilities of the IO shell. @module */

/** A promise with its resolve and reject functions. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** A new {@link Deferred}. */
export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Resolves after `ms`, or at once when `signal` fires (then with `false`). */
export function sleep(ms: number, signal?: { readonly aborted: boolean; onAbort(cb: () => void): () => void }): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve(false);
      return;
    }
    let off = (): void => undefined;
    const timer = setTimeout(() => {
      off();
      resolve(true);
    }, Math.max(0, ms));
    if (signal) {
      off = signal.onAbort(() => {
        clearTimeout(timer);
        resolve(false);
      });
    }
  });
}

/** A one-shot stop signal with listeners. */
export class StopSignal {
  #aborted = false;
  readonly #listeners = new Set<() => void>();

  get aborted(): boolean {
    return this.#aborted;
  }

  /** Calls `cb` when the signal fires; returns a function that removes it. */
  onAbort(cb: () => void): () => void {
    if (this.#aborted) {
      cb();
      return () => undefined;
    }
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  fire(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    for (const cb of [...this.#listeners]) cb();
    this.#listeners.clear();
  }
}

/**
 * An unbounded-by-default queue read with `await shift()`. With `capacity`, pushing
 * onto a full queue drops the oldest item and counts it in `dropped`.
 */
export class AsyncQueue<T> {
  readonly #items: T[] = [];
  #head = 0;
  #waiter: Deferred<T | undefined> | null = null;
  #closed = false;
  dropped = 0;

  constructor(private readonly capacity = Infinity) {}

  get length(): number {
    return this.#items.length - this.#head;
  }

  get closed(): boolean {
    return this.#closed;
  }

  push(item: T): void {
    if (this.#closed) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      w.resolve(item);
      return;
    }
    if (this.length >= this.capacity) {
      this.#head++;
      this.dropped++;
    }
    this.#items.push(item);
  }

  /** The next item, or `undefined` once the queue is closed and empty. */
  shift(): Promise<T | undefined> {
    if (this.length > 0) {
      const item = this.#items[this.#head] as T;
      this.#items[this.#head] = undefined as T;
      this.#head++;
      if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
        this.#items.splice(0, this.#head);
        this.#head = 0;
      }
      return Promise.resolve(item);
    }
    if (this.#closed) return Promise.resolve(undefined);
    this.#waiter ??= deferred<T | undefined>();
    return this.#waiter.promise;
  }

  /** Takes every queued item at once. */
  drain(): T[] {
    const out = this.#items.slice(this.#head);
    this.#items.length = 0;
    this.#head = 0;
    return out;
  }

  /** No more items: waiting readers get `undefined` once the queue is empty. */
  close(): void {
    this.#closed = true;
    if (this.#waiter && this.length === 0) {
      const w = this.#waiter;
      this.#waiter = null;
      w.resolve(undefined);
    }
  }
}
