//! Running the `wtgate` binary from a test — to completion ([`run_wtgate`]) or serving
//! ([`Serving`], with a [`TempConfig`] file) — and waiting for a condition.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the `wtgate` binary with `args` and `env` (and no WTGATE_ADMIN_TOKEN from the test's own
/// environment), killing it, and failing, if it runs longer than `limit`.
pub fn run_wtgate(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wtgate"))
        .args(args)
        .env_remove("WTGATE_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wtgate");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "wtgate {args:?} still running after {limit:?}; output: {}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A finished command's stdout and stderr, as one text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `probe` every 20 ms until it gives a value; fails naming `what` after 10 s. For state
/// that no event announces (counters, session tables, expiry).
pub fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A config file holding `text`, removed when dropped.
pub struct TempConfig(std::path::PathBuf);

impl TempConfig {
    pub fn new(name: &str, text: &str) -> TempConfig {
        let path =
            std::env::temp_dir().join(format!("wtgate-test-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempConfig(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Replaces the file's text (whole, in one rename, as an editor or config manager would).
    pub fn write(&self, text: &str) {
        let tmp = self.0.with_extension("toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The arguments of a wtgate on one unpinned shard listening on 127.0.0.1:`listen` in front of
/// one backend `wt1` at `backend`, followed by `more`.
pub fn one_backend_args(listen: u16, backend: std::net::SocketAddr, more: &[&str]) -> Vec<String> {
    let base = [
        "--threads".to_string(),
        "1".into(),
        "--no-pin".into(),
        "--listen".into(),
        format!("127.0.0.1:{listen}"),
        "--backend".into(),
        format!("wt1={backend}"),
    ];
    base.into_iter()
        .chain(more.iter().map(|s| s.to_string()))
        .collect()
}

/// Where wtgate found its port in use, what holds that port (`ss`), to tell who took it.
fn sockets_if_in_use(lines: &[String]) -> String {
    let Some(port) = lines.iter().find(|l| l.contains("in use")).and_then(|l| {
        let addr = l.split("cannot listen on ").nth(1)?.split(':').nth(1)?;
        Some(addr.trim().to_string())
    }) else {
        return String::new();
    };
    let ss = Command::new("ss").args(["-tanpe"]).output();
    let ss = ss
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let held: Vec<&str> = ss
        .lines()
        .filter(|l| l.contains(&format!(":{port} ")))
        .collect();
    format!("\nsockets on port {port}:\n{}", held.join("\n"))
}

/// A serving wtgate: its stderr line by line, and its stdout (the access log's `-`) as a whole.
pub struct Serving {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Serving {
    /// Starts the binary and waits for its "listening on" line.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Serving {
        Serving::start_with_env(args, &[])
    }

    /// [`Serving::start`] with these environment variables set.
    pub fn start_with_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Serving {
        use std::io::{BufRead, BufReader, Read};
        let mut child = Command::new(env!("CARGO_BIN_EXE_wtgate"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wtgate");
        let mut out = child.stdout.take().unwrap();
        // Read all along, so that wtgate never blocks on a full pipe; ends when wtgate exits.
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let s = Serving {
            child,
            lines,
            stdout: Some(stdout),
        };
        s.wait_for_line("listening on");
        s
    }

    /// SIGTERM, then the exit code, stdout, and the stderr lines not yet waited for.
    pub fn stop(mut self) -> (Option<i32>, String, Vec<String>) {
        self.signal("-TERM");
        let code = self.exit_code();
        let out = self.stdout.take().unwrap().join().unwrap();
        // The stderr reader ends at wtgate's exit too; wait for its last lines.
        let err = self.lines.iter().collect();
        (code, out, err)
    }

    /// The stderr lines up to and with the first that holds `part` (fails after 10 s without).
    pub fn lines_until(&self, part: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(l) if l.contains(part) => {
                    seen.push(l);
                    return seen;
                }
                Ok(l) => seen.push(l),
                Err(e) => panic!(
                    "no stderr line with '{part}' in {seen:#?}: {e}{}",
                    sockets_if_in_use(&seen)
                ),
            }
        }
    }

    pub fn wait_for_line(&self, part: &str) -> String {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(l) if l.contains(part) => return l,
                Ok(l) => seen.push(l),
                Err(e) => panic!("no stderr line with '{part}' in {seen:#?}: {e}"),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The exit status, waiting at most 10 s.
    pub fn exit_code(&mut self) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("wtgate still running 10 s after the signal");
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
