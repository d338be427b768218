//! Sweep progress on stderr: an indicatif bar (runs done/total, simulated events per second,
//! ETA) on a terminal, plain periodic lines otherwise (logs, CI, Slurm output files). Progress
//! is about our own speed, so it never reaches a report.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, lines every `interval` otherwise.
    Auto {
        /// Interval of plain lines.
        interval: Duration,
    },
    /// Nothing.
    Off,
}

impl Default for ProgressMode {
    fn default() -> Self {
        ProgressMode::Auto { interval: Duration::from_secs(10) }
    }
}

struct Shared {
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    events: Arc<AtomicU64>,
    stop: AtomicBool,
    started: Instant,
    done_at_start: usize,
}

impl Shared {
    fn line(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        #[allow(clippy::cast_precision_loss)] // display only
        let rate = self.events.load(Ordering::Relaxed) as f64 / secs;
        let now = done - self.done_at_start;
        let left = self.total - done;
        #[allow(clippy::cast_precision_loss)]
        let eta = if now == 0 { None } else { Some(secs / now as f64 * left as f64) };
        let failed = self.failed.load(Ordering::Relaxed);
        format!(
            "sweep: {done}/{} runs done{}, {} events/s, ETA {}",
            self.total,
            if failed > 0 { format!(" ({failed} failed)") } else { String::new() },
            human(rate),
            eta.map_or_else(|| "?".to_owned(), |s| format!("{:.0} s", s.ceil()))
        )
    }
}

/// `12.3 M`-style numbers.
fn human(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// A running display; [`Progress::finish`] stops it.
pub struct Progress {
    shared: Arc<Shared>,
    bar: Option<ProgressBar>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
    show: bool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("total", &self.shared.total).finish_non_exhaustive()
    }
}

impl Progress {
    /// Start showing progress of `total` runs of which `done` are already finished.
    pub fn start(
        mode: ProgressMode,
        total: usize,
        done: usize,
        events: Arc<AtomicU64>,
    ) -> Progress {
        let shared = Arc::new(Shared {
            total,
            done: AtomicUsize::new(done),
            failed: AtomicUsize::new(0),
            events,
            stop: AtomicBool::new(false),
            started: Instant::now(),
            done_at_start: done,
        });
        let ProgressMode::Auto { interval } = mode else {
            return Progress { shared, bar: None, ticker: Mutex::new(None), show: false };
        };
        let terminal = std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let b = ProgressBar::with_draw_target(
                Some(total as u64),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            b.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} runs  {msg}  ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_position(done as u64);
            b
        });
        let s = shared.clone();
        let b = bar.clone();
        let period = if terminal { Duration::from_millis(250) } else { interval };
        let ticker = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !s.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() < period {
                    continue;
                }
                last = Instant::now();
                match &b {
                    Some(b) => {
                        let secs = s.started.elapsed().as_secs_f64().max(1e-3);
                        #[allow(clippy::cast_precision_loss)]
                        let rate = s.events.load(Ordering::Relaxed) as f64 / secs;
                        b.set_message(format!("{} events/s", human(rate)));
                    }
                    None => eprintln!("{}", s.line()),
                }
            }
        });
        Progress { shared, bar, ticker: Mutex::new(Some(ticker)), show: true }
    }

    /// One run finished (or failed).
    pub fn run_done(&self, ok: bool) {
        self.shared.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    /// Stop the display and print the final line.
    pub fn finish(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.show {
            eprintln!("{}", self.shared.line());
        }
    }
}
