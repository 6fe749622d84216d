//! `satchel serve` as a child process, for the tests that must kill it or run several of it
//! (`crash.rs`, `multiprocess.rs`). Its output is collected line by line; with
//! `SATCHEL_TEST_VERBOSE=1` it is also echoed, and `SATCHEL_TEST_RUST_LOG` overrides the
//! children's log filter.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

pub const BIN: &str = env!("CARGO_BIN_EXE_satchel");

/// A free loopback port (nothing listens on it when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command for the binary with a clean `SATCHEL_*` environment.
pub fn satchel_cmd() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("SATCHEL_") {
            cmd.env_remove(k);
        }
    }
    let filter = std::env::var("SATCHEL_TEST_RUST_LOG")
        .unwrap_or_else(|_| "info,sqlx=warn,lightning=warn,hyper=warn".to_owned());
    cmd.env("RUST_LOG", filter);
    // Several children run at once: each serves its metrics on a port of its own.
    cmd.env("SATCHEL_METRICS_LISTEN", "127.0.0.1:0");
    cmd
}

type Lines = Arc<Mutex<Vec<String>>>;

/// Reads a child's pipe line by line into `lines` (a full pipe would block the child).
fn pump(pipe: impl Read + Send + 'static, label: String) -> Lines {
    let lines: Lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let verbose = std::env::var("SATCHEL_TEST_VERBOSE").is_ok_and(|v| v == "1");
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if verbose {
                eprintln!("[{label}] {line}");
            }
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
}

/// A running `satchel serve`. Dropping it kills the process (and prints its stderr tail if the
/// test is failing).
pub struct Proc {
    pub label: String,
    /// Adds the arguments and environment to `satchel serve --listen …` (kept to relaunch).
    configure: Configure,
    child: Child,
    addr: String,
    out: Lines,
    err: Lines,
}

type Configure = Box<dyn Fn(&mut Command) + Send + Sync>;

/// Starts `satchel serve --listen <a free port>` configured by `configure`.
fn launch(label: &str, configure: &Configure) -> (Child, String, Lines, Lines) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = satchel_cmd();
    cmd.args(["serve", "--listen", &addr]);
    configure(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn satchel");
    let out = pump(child.stdout.take().unwrap(), format!("{label} out"));
    let err = pump(child.stderr.take().unwrap(), format!("{label} err"));
    (child, addr, out, err)
}

/// Launches after a failure to bind the port [`free_port`] picked: it was free when picked, but
/// something else may take it before the child binds it (another test's LDK nodes bind
/// ephemeral ports too).
const BIND_RETRIES: usize = 5;

impl Proc {
    /// Starts `satchel serve --listen <a free port>`; `configure` adds the other arguments and
    /// environment. [`Proc::wait_ready`] relaunches it on another port if the port was taken.
    pub fn serve(
        label: impl Into<String>,
        configure: impl Fn(&mut Command) + Send + Sync + 'static,
    ) -> Proc {
        let label = label.into();
        let configure: Configure = Box::new(configure);
        let (child, addr, out, err) = launch(&label, &configure);
        Proc {
            label,
            configure,
            child,
            addr,
            out,
            err,
        }
    }

    /// True if the process exited because its port was taken (its stderr says so; the pipe may
    /// take a moment to drain after the exit).
    async fn failed_to_bind(&mut self) -> bool {
        for _ in 0..40 {
            if self.line(false, "Address already in use").is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// `host:port` it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 60 lines of stderr.
    pub fn tail(&self) -> String {
        let err = self.err.lock().unwrap();
        let from = err.len().saturating_sub(60);
        err[from..].join("\n")
    }

    /// Panics if the process has exited.
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited unexpectedly ({status}); stderr tail:\n{}",
                self.label,
                self.tail()
            );
        }
    }

    /// Waits until the server answers (`GET /v1/wallets` without a key is 401).
    pub async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut relaunches = 0;
        loop {
            if let Ok(Some(_)) = self.child.try_wait()
                && relaunches < BIND_RETRIES
                && self.failed_to_bind().await
            {
                relaunches += 1;
                eprintln!("{}: {} was taken; relaunching", self.label, self.addr);
                (self.child, self.addr, self.out, self.err) = launch(&self.label, &self.configure);
                continue;
            }
            self.check_alive();
            if let Ok(r) = http
                .get(format!("{}/v1/wallets", self.base()))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && r.status() == StatusCode::UNAUTHORIZED
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready; stderr tail:\n{}",
                self.label,
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every line of stdout (`stdout`) or stderr printed so far.
    pub fn lines(&self, stdout: bool) -> Vec<String> {
        let lines = if stdout { &self.out } else { &self.err };
        lines.lock().unwrap().clone()
    }

    /// The first line of stdout (`stdout`) or stderr containing `needle`, if printed yet.
    pub fn line(&self, stdout: bool, needle: &str) -> Option<String> {
        let lines = if stdout { &self.out } else { &self.err };
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// Waits for a line containing `needle`; returns it.
    pub async fn wait_line(&mut self, stdout: bool, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.line(stdout, needle) {
                return l;
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "{} never printed {needle:?}; stderr tail:\n{}",
                self.label,
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The development account's secret key, printed once on the first start.
    pub async fn sak(&mut self) -> String {
        let line = self
            .wait_line(true, SAK_PREFIX, Duration::from_secs(30))
            .await;
        let sak = line.split(SAK_PREFIX).nth(1).unwrap().trim().to_owned();
        assert!(sak.starts_with("sak_"), "{line}");
        sak
    }

    /// Whether this process printed a development account's key (it created the account).
    pub fn printed_sak(&self) -> bool {
        self.line(true, SAK_PREFIX).is_some()
    }

    /// Waits for the crash point `point` (`SATCHEL_CRASH_AT`) to announce itself; the process
    /// then waits there to be killed.
    pub async fn wait_crashpoint(&mut self, point: &str) {
        self.wait_line(
            false,
            &format!("SATCHEL_CRASHPOINT {point}"),
            Duration::from_secs(60),
        )
        .await;
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM; waits (bounded) for the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        sigterm(self.pid());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after SIGTERM; stderr tail:\n{}",
                self.label,
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and expect a clean exit.
    pub async fn stop(&mut self) {
        let status = self.terminate().await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM; stderr tail:\n{}",
            self.label,
            self.tail()
        );
    }
}

const SAK_PREFIX: &str = "secret key (sak): ";

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- {} stderr tail -----\n{}", self.label, self.tail());
        }
    }
}
