/**
 * Progress of the bench on stderr: on a terminal a bar redrawn in place (log lines print above it); otherwise
 * (a pipe, a CI log) plain lines with the step count, one per step and per message.
 */

export class Progress {
  private done = 0;
  private label = '';
  private readonly tty: boolean;
  private readonly started = Date.now();

  constructor(
    private total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = out.isTTY === true && !process.env['CI'];
  }

  /** More steps than planned (a section found more to do). */
  grow(by: number): void {
    this.total += by;
    this.draw();
  }

  /** Start the next step. */
  step(label: string): void {
    this.label = label;
    if (this.tty) this.draw();
    else this.out.write(`[bench ${Math.min(this.done + 1, this.total)}/${this.total}] ${label}\n`);
  }

  /** The current step finished. */
  tick(): void {
    this.done = Math.min(this.total, this.done + 1);
    this.draw();
  }

  /** A message: above the bar on a terminal, a plain line otherwise. */
  log(line: string): void {
    if (this.tty) {
      this.out.write(`\r\x1b[2K[bench] ${line}\n`);
      this.draw();
    } else this.out.write(`[bench] ${line}\n`);
  }

  /** Clear the bar (before the results go to stdout on the same terminal). */
  finish(): void {
    if (this.tty) this.out.write('\r\x1b[2K');
  }

  private draw(): void {
    if (!this.tty) return;
    const width = 30;
    const frac = this.total > 0 ? this.done / this.total : 0;
    const fill = Math.round(frac * width);
    const secs = Math.round((Date.now() - this.started) / 1000);
    const cols = this.out.columns ?? 100;
    const line = `[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${this.done}/${this.total} ${secs}s ${this.label}`;
    this.out.write(`\r\x1b[2K${line.slice(0, cols - 1)}`);
  }
}
