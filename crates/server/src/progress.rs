//! Progress display for long CLI work (`satchel audit`, `satchel wallet import`): a bar of
//! steps with a ticking spinner on stderr, drawn only when stderr is a terminal, so scripts,
//! tests and CI see exactly the output they saw before. stdout (the results) is never touched.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `steps` steps named `what`; hidden unless stderr is a terminal.
pub fn bar(steps: u64, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {prefix}: [{bar:20}] {pos}/{len} {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Step `done` (0-based) starts: `what`.
pub fn step(bar: &ProgressBar, done: u64, what: &'static str) {
    bar.set_position(done);
    bar.set_message(what);
}

/// Removes the bar (results are printed after it).
pub fn finish(bar: ProgressBar) {
    bar.finish_and_clear();
}
