"""One progress line for every long loop: count, rate, ETA and a few named values.

On a terminal the line is redrawn in place; otherwise (CI, a log file, a
notebook) a full line is printed at most every ``min_interval`` seconds, so
logs stay short.
"""
import sys
import time


def _clock(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Progress line for a loop of ``total`` iterations.

    Parameters
    ----------
    total : int
    label : str
    enabled : bool
        False makes every method a no-op.
    initial : int
        Iterations already done (a resumed run); the rate counts only new ones.
    stream : file, default sys.stderr
    min_interval : float
        Seconds between printed lines when the stream is not a terminal.
    """

    def __init__(self, total, label="", enabled=True, initial=0, stream=None, min_interval=2.0):
        self.total, self.label, self.enabled = total, label, enabled
        self.initial = initial
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval = 0.2 if self.tty else min_interval
        self.start = time.perf_counter()
        self.last_print = -float("inf")
        self.line = ""

    def update(self, done, **values):
        """Report that ``done`` iterations are finished; ``values`` are shown as name=value."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last_print < self.min_interval and done < self.total:
            return
        self.last_print = now
        elapsed = now - self.start
        rate = (done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        eta_text = _clock(eta) if eta == eta else "?"
        self.line = (f"{self.label} {done}/{self.total} {shown} | {rate:.3g} it/s | "
                     f"elapsed {_clock(elapsed)} ETA {eta_text}")
        if self.tty:
            self.stream.write("\r" + self.line + "\033[K")
        else:
            self.stream.write(self.line + "\n")
        self.stream.flush()

    def close(self):
        """End the line (terminal) so later output starts on a fresh line."""
        if self.enabled and self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()
