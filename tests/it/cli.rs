//! The `wtgate` command line: `check` validates a config, reports every problem at once and prints
//! the routing table; `--help` and `--version` work everywhere; nothing panics.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{Serving, TempConfig, free_port, run_wtgate, text};

/// Runs the binary with `args`, killing it if it takes more than 10 s (a `check` must not start
/// serving).
fn wtgate(args: &[&str]) -> Output {
    run_wtgate(args, &[], Duration::from_secs(10))
}

#[test]
fn check_rejects_a_prefix_given_twice() {
    let out = wtgate(&[
        "check",
        "--listen",
        "127.0.0.1:8080",
        "--backend",
        "wt1=127.0.0.1:9090",
        "--backend",
        "wt1=127.0.0.1:9091",
    ]);
    let t = text(&out);
    assert!(!out.status.success(), "clashing prefixes accepted: {t}");
    assert!(
        !t.contains("panicked"),
        "a panic is not a readable message: {t}"
    );
    assert!(t.contains("wt1"), "message does not name the prefix: {t}");
    assert!(
        t.contains("127.0.0.1:9090") && t.contains("127.0.0.1:9091"),
        "message does not name both backends: {t}"
    );
    assert!(t.len() < 2000, "message too long to be readable: {t}");
}

#[test]
fn check_accepts_a_valid_config_and_prints_the_routing_table() {
    let out = wtgate(&[
        "check",
        "--listen",
        "127.0.0.1:8080",
        "--backend",
        "wt1=127.0.0.1:9090",
        "--backend",
        "wt2=127.0.0.1:9091,weight=2",
        "--backend",
        "wt10=127.0.0.1:9092",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "valid config rejected: {}",
        text(&out)
    );
    for needle in [
        "wt1",
        "wt2",
        "wt10",
        "127.0.0.1:9090",
        "127.0.0.1:9091",
        "127.0.0.1:9092",
    ] {
        assert!(
            stdout.contains(needle),
            "routing table lacks {needle}: {stdout}"
        );
    }
    // Each backend on its own line with its prefix and address.
    for (p, a) in [("wt1", "9090"), ("wt2", "9091"), ("wt10", "9092")] {
        assert!(
            stdout.lines().any(|l| l
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == p)
                && l.contains(a)),
            "no line shows {p} with port {a}: {stdout}"
        );
    }
}

#[test]
fn check_rejects_a_malformed_backend() {
    let out = wtgate(&[
        "check",
        "--listen",
        "127.0.0.1:8080",
        "--backend",
        "127.0.0.1:9090",
    ]);
    let t = text(&out);
    assert!(
        !out.status.success(),
        "backend without prefix accepted: {t}"
    );
    assert!(!t.contains("panicked"), "{t}");
    assert!(
        t.contains("127.0.0.1:9090"),
        "message does not quote the bad spec: {t}"
    );
}

#[test]
fn check_rejects_no_backends() {
    let out = wtgate(&["check", "--listen", "127.0.0.1:8080"]);
    let t = text(&out);
    assert!(
        !out.status.success(),
        "config without backends accepted: {t}"
    );
    assert!(!t.contains("panicked"), "{t}");
    assert!(
        t.contains("--backend"),
        "message does not say how to add a backend: {t}"
    );
}

#[test]
fn help_works_everywhere() {
    for cmd in [&[][..], &["run"], &["check"]] {
        for flag in ["--help", "-h"] {
            let args = [cmd, &[flag]].concat();
            let out = wtgate(&args);
            let t = text(&out);
            assert!(out.status.success(), "wtgate {args:?} failed: {t}");
            assert!(
                t.contains("--backend"),
                "wtgate {args:?} does not mention --backend: {t}"
            );
        }
    }
    // `demo` starts its own demo backends, so it has --wt1/--wt2 rather than --backend.
    for flag in ["--help", "-h"] {
        let out = wtgate(&["demo", flag]);
        let t = text(&out);
        assert!(out.status.success(), "wtgate demo {flag} failed: {t}");
        assert!(
            t.contains("--listen") && t.contains("demo"),
            "wtgate demo {flag}: {t}"
        );
    }
}

#[test]
fn version_works_everywhere() {
    let want = format!("wtgate {}", env!("CARGO_PKG_VERSION"));
    for cmd in [&[][..], &["run"], &["check"], &["demo"]] {
        for flag in ["--version", "-V"] {
            let args = [cmd, &[flag]].concat();
            let out = wtgate(&args);
            assert!(out.status.success(), "wtgate {args:?}: {}", text(&out));
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                want,
                "wtgate {args:?}"
            );
        }
    }
}

/// A flag the parser refuses is exit code 1, like any other refusal, and says where to look.
#[test]
fn a_bad_flag_is_exit_code_1_and_points_to_help() {
    for (args, help) in [
        (&["--bogus"][..], "wtgate --help"),
        (&["run", "--threads", "x"], "wtgate run --help"),
        (&["check", "--no-such-flag"], "wtgate check --help"),
        (
            &["demo", "--backend", "wt1=127.0.0.1:9090"],
            "wtgate demo --help",
        ),
    ] {
        let out = wtgate(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "wtgate {args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            err.trim_end().lines().last(),
            Some(format!("Run '{help}' for the options.").as_str()),
            "wtgate {args:?}: {err}"
        );
    }
}

#[test]
fn a_port_in_use_is_one_clear_line_and_exit_code_1() {
    // Held by a listener *without* SO_REUSEPORT, and by one *with* it (another wtgate): both refused.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = plain.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let out = wtgate(&[
        "--listen",
        &listen,
        "--backend",
        "wt1=127.0.0.1:9",
        "--threads",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {listen}")), "{err}");
    assert!(err.contains("in use"), "{err}");

    let shared = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    shared.set_reuse_port(true).unwrap();
    shared
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    shared.listen(8).unwrap();
    let addr = shared.local_addr().unwrap().as_socket().unwrap();
    let out = wtgate(&[
        "--listen",
        &addr.to_string(),
        "--backend",
        "wt1=127.0.0.1:9",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("in use"), "{}", text(&out));
}

/// `wtgate --help | head -1`: the reader goes away while wtgate still writes. Closing our end at
/// once, before the child has written anything, makes its first write fail with EPIPE every time;
/// reading one line first is `head -1`'s race. Either way: no panic, a quiet exit.
#[test]
fn a_closed_stdout_is_a_quiet_exit_not_a_panic() {
    use std::io::{BufRead, BufReader};
    let check = [
        "check",
        "--listen",
        "8080",
        "--backend",
        "wt1=127.0.0.1:9090",
    ];
    for args in [&["--help"][..], &check] {
        for i in 0..20 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_wtgate"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn wtgate");
            let stdout = child.stdout.take().unwrap();
            if i % 2 == 1 {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).unwrap();
                assert!(!line.is_empty(), "wtgate {args:?} printed nothing");
            } else {
                drop(stdout);
            }
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(0),
                "wtgate {args:?} with a closed stdout: {err}"
            );
            assert!(
                err.is_empty(),
                "wtgate {args:?} with a closed stdout: {err}"
            );
        }
    }
}

#[test]
fn an_unbracketed_ipv6_listen_address_is_explained() {
    let out = wtgate(&[
        "check",
        "--listen",
        "::1:8080",
        "--backend",
        "wt1=[::1]:9090",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains("an IPv6 address needs brackets: write [::1]:8080"),
        "{err}"
    );
    assert!(!err.contains("0.0.0.0"), "read as a bare :PORT: {err}");
}

/// One run of `check` names every problem, so that an operator fixes them in one round; a bad
/// --backend does not also draw "no backends".
#[test]
fn check_reports_every_error_at_once() {
    let out = wtgate(&[
        "check",
        "--listen",
        "127.0.0.1:8080",
        "--listen",
        "127.0.0.1:8080",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "wt1=::1:9090",
        "--connect-timeout",
        "5x",
        "--check-interval",
        "soon",
        "--check",
        "health",
        "--retries",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    for needle in [
        "--listen 127.0.0.1:8080 is given twice",
        "--listen '127.0.0.1:0': port 0",
        "--backend 'wt1=::1:9090': an IPv6 address needs brackets: write [::1]:9090",
        "--connect-timeout: '5x'",
        "--check-interval: 'soon'",
        "--check: check 'health'",
        "--retries must be at least 1",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("wtgate: ") && l.contains(needle)),
            "no line says {needle:?}: {err}"
        );
    }
    assert_eq!(err.lines().count(), 7, "{err}");
    assert!(!err.contains("no backends"), "{err}");
}

#[test]
fn check_rejects_two_prefixes_on_one_server_and_port_0() {
    let out = wtgate(&[
        "check",
        "--listen",
        "8080",
        "--backend",
        "wt1=127.0.0.1:9090",
        "--backend",
        "wt2=127.0.0.1:9090",
        "--backend",
        "wt3=127.0.0.1:0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains("wt1 and wt2 are both at 127.0.0.1:9090"),
        "{err}"
    );
    assert!(err.contains("wt3=127.0.0.1:0: port 0"), "{err}");
}

/// Settings that work but fight Wt's own timeouts: a warning each, and still a valid config.
#[test]
fn check_warns_about_timeouts_that_fight_wt() {
    let args = [
        "check",
        "--listen",
        "8080",
        "--backend",
        "wt1=127.0.0.1:9090",
    ];
    let out = wtgate(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "defaults warned: {}", text(&out));

    let fighting = [
        &args[..],
        &["--pool-idle-timeout", "10s", "--server-timeout", "50s"],
    ]
    .concat();
    let out = wtgate(&fighting);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning refused the config: {err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configuration OK"),
        "{}",
        text(&out)
    );
    for flag in ["--pool-idle-timeout 10s", "--server-timeout 50s"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("wtgate: warning: ") && l.contains(flag)),
            "no warning about {flag}: {err}"
        );
    }
}

/// io_uring needs 1 MiB of locked memory per shard + 1 MiB. With a hard RLIMIT_MEMLOCK of 3 MiB
/// that only root could raise, 2 shards fit and 3 do not. As root, the child drops to nobody,
/// since root could raise the limit.
#[test]
fn check_refuses_more_shards_than_the_memlock_limit_allows() {
    use std::os::unix::process::CommandExt;
    let check = |threads: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wtgate"));
        cmd.args([
            "check",
            "--listen",
            "8080",
            "--backend",
            "wt1=127.0.0.1:9090",
            "--threads",
            threads,
        ]);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 3 << 20,
                    rlim_max: 3 << 20,
                };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::geteuid() == 0
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(65534) != 0
                        || libc::setuid(65534) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().expect("run wtgate check")
    };
    let out = check("2");
    assert!(out.status.success(), "2 shards refused: {}", text(&out));
    let out = check("3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "3 shards accepted: {}",
        text(&out)
    );
    for needle in ["ulimit -l", "LimitMEMLOCK=", "--threads"] {
        assert!(err.contains(needle), "no {needle}: {err}");
    }
}

#[test]
fn check_shows_which_listeners_expect_the_proxy_protocol() {
    let out = wtgate(&[
        "check",
        "--listen",
        "127.0.0.1:8080",
        "--listen",
        "127.0.0.1:8443,proxy-protocol",
        "--backend",
        "wt1=127.0.0.1:9090",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    let line = |addr: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with("listen:") && l.contains(addr))
            .unwrap_or_else(|| panic!("no listen line for {addr}: {stdout}"))
            .to_string()
    };
    assert!(
        line("127.0.0.1:8443").contains("PROXY protocol"),
        "{stdout}"
    );
    assert!(!line("127.0.0.1:8080").contains("PROXY"), "{stdout}");

    let out = wtgate(&[
        "check",
        "--listen",
        "8080,accept-proxy",
        "--backend",
        "wt1=127.0.0.1:9090",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out)
            .contains("unknown option 'accept-proxy' (known: proxy-protocol, tls, redirect-https)"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_shows_the_reuse_policy_and_refuses_an_unknown_one() {
    let base = [
        "check",
        "--listen",
        "8080",
        "--backend",
        "wt1=127.0.0.1:9090",
    ];
    for (flag, want) in [
        (&[][..], "reuse: safe"),
        (&["--reuse", "always"], "reuse: always"),
        (&["--reuse", "never"], "reuse: never"),
    ] {
        let out = wtgate(&[&base[..], flag].concat());
        assert!(out.status.success(), "{flag:?}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.lines().any(|l| l.starts_with(want)),
            "{flag:?}: {stdout}"
        );
    }
    let out = wtgate(&[&base[..], &["--reuse", "sometimes"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--reuse 'sometimes'"), "{}", text(&out));
}

#[test]
fn check_shows_the_trusted_proxies() {
    let base = [
        "check",
        "--listen",
        "8080",
        "--backend",
        "wt1=127.0.0.1:9090",
    ];
    let forwarded = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("X-Forwarded-For/-Proto:"))
            .unwrap_or_else(|| panic!("no X-Forwarded line: {}", text(out)))
            .to_string()
    };
    let out = wtgate(&base);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        forwarded(&out).contains("no client is trusted"),
        "{}",
        text(&out)
    );

    let trusting = [
        &base[..],
        &[
            "--trust-forwarded-from",
            "10.1.2.3/16",
            "--trust-forwarded-from",
            "::1",
        ],
    ]
    .concat();
    let out = wtgate(&trusting);
    assert!(out.status.success(), "{}", text(&out));
    let line = forwarded(&out);
    assert!(
        line.contains("10.1.0.0/16") && line.contains("::1/128"),
        "{line}"
    );

    let out = wtgate(&[&base[..], &["--trust-forwarded-from", "proxy.local"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--trust-forwarded-from 'proxy.local'"),
        "{}",
        text(&out)
    );
}

/// A backend given by host name shows the name as written and the address it resolves to now.
#[test]
fn check_shows_a_backend_host_name_and_its_address() {
    let out = wtgate(&[
        "check",
        "--listen",
        "8080",
        "--backend",
        "wt1=localhost:9090",
        "--backend",
        "wt2=127.0.0.1:9091",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    let row = |p: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(p))
            .unwrap_or_else(|| panic!("no row for {p}: {stdout}"))
            .to_string()
    };
    let wt1 = row("wt1");
    assert!(
        wt1.contains("localhost:9090 (") && wt1.contains(":9090)"),
        "{wt1}"
    );
    assert!(
        !row("wt2").contains('('),
        "an address is shown once: {stdout}"
    );
}

/// The example config at the repository root is valid as shipped, and `check` shows its table.
#[test]
fn check_accepts_the_example_config_file() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/wtgate.example.toml");
    let out = wtgate(&["check", "--config", example]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("configuration OK\n"), "{stdout}");
    assert!(stdout.contains("listen: 0.0.0.0:80\n"), "{stdout}");
    for (p, a) in [("wt1", "127.0.0.1:9090"), ("wt2", "127.0.0.1:9091")] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(p) && l.contains(a)),
            "no row for {p} at {a}: {stdout}"
        );
    }
}

/// A misspelt key is exit code 1 and one line naming the file, the line, the key and the keys
/// that would be right there.
#[test]
fn a_typo_in_the_config_file_names_the_key_and_line() {
    let file = TempConfig::new(
        "typo",
        "[[backend]]\nprefix = \"wt1\"\naddress = \"127.0.0.1:9090\"\n\n[limits]\nmaxconnn = 10\n",
    );
    let out = wtgate(&["check", "--config", file.path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert_eq!(err.lines().count(), 1, "{err}");
    let want = format!(
        "wtgate: {}:6: limits.maxconnn: unknown field `maxconnn`, expected one of `maxconn`",
        file.path()
    );
    assert!(err.starts_with(&want), "{err}");
}

/// Every bad value of a file in one run, each at its line; and what a flag replaces is neither
/// used nor blamed on the file.
#[test]
fn check_reports_every_bad_value_of_the_config_file_at_its_line() {
    let file = TempConfig::new(
        "bad-values",
        "[[listen]]\naddress = \"::1:8080\"\n[[backend]]\nprefix = \"wt1\"\n\
         address = \"127.0.0.1:9090\"\nweight = \"x\"\n[timeouts]\nconnect = \"5x\"\n\
         [limits]\nretries = 0\n",
    );
    let out = wtgate(&["check", "--config", file.path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let p = file.path();
    let want = [
        format!("{p}:2: listen[0].address: an IPv6 address needs brackets: write [::1]:8080"),
        format!("{p}:6: backend[0].weight: '\"x\"' is not a whole number 0..=1000"),
        format!("{p}:8: timeouts.connect: '5x': unknown unit 'x'"),
        format!("{p}:10: limits.retries must be at least 1"),
    ];
    for w in &want {
        assert!(
            err.lines().any(|l| l.starts_with(&format!("wtgate: {w}"))),
            "no line {w:?}: {err}"
        );
    }
    // A bad entry draws no "no backends" or "no listen address" besides.
    assert_eq!(err.lines().count(), want.len(), "{err}");

    let out = wtgate(&["check", "--config", p, "--retries", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l == "wtgate: --retries must be at least 1 (it counts connect attempts)"),
        "{err}"
    );
}

/// A flag wins over the file's value; --listen and --backend replace the file's lists; what no
/// flag gives stays the file's.
#[test]
fn flags_override_the_config_file() {
    let file = TempConfig::new(
        "override",
        "[[listen]]\naddress = \"127.0.0.1:8081\"\n\
         [[backend]]\nprefix = \"wt7\"\naddress = \"127.0.0.1:9097\"\n\
         [pool]\nreuse = \"never\"\n\
         [forwarded]\ntrusted = [\"10.0.0.0/8\"]\n",
    );
    let out = wtgate(&["check", "--config", file.path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for line in [
        "listen: 127.0.0.1:8081\n",
        "reuse: never ",
        "appended to from 10.0.0.0/8\n",
    ] {
        assert!(stdout.contains(line), "{line:?}: {stdout}");
    }
    assert!(stdout.lines().any(|l| l.starts_with("wt7 ")), "{stdout}");

    let out = wtgate(&[
        "check",
        "--config",
        file.path(),
        "--listen",
        "127.0.0.1:8090",
        "--backend",
        "wt1=127.0.0.1:9090",
        "--reuse",
        "always",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for line in [
        "listen: 127.0.0.1:8090\n",
        "reuse: always ",
        "appended to from 10.0.0.0/8\n",
    ] {
        assert!(stdout.contains(line), "{line:?}: {stdout}");
    }
    assert!(
        !stdout.contains("8081"),
        "the file's listener stayed: {stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("wt1 ")), "{stdout}");
    assert!(
        !stdout.contains("wt7"),
        "the file's backend stayed: {stdout}"
    );
}

/// Runs `wtgate ARGS` (serving), calls `poke` with its stderr lines so far each time one comes,
/// until `poke` returns true or 10 s pass; then stops it and returns every line.
fn serve_until(args: &[String], mut poke: impl FnMut(&[String]) -> bool) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wtgate"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wtgate");
    let stderr = child.stderr.take().unwrap();
    // A watchdog kills wtgate (ending the stream) if `poke` is never satisfied.
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let waited = finished.recv_timeout(Duration::from_secs(10));
        if waited == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        lines.push(line);
        if poke(&lines) {
            break;
        }
    }
    drop(done);
    watchdog.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    lines.join("\n")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Backend i is checked by shard i mod N, and that shard's lines carry its id, the same id as its
/// thread (`wtgate-shard-N`) and its stats; a failed check says why.
#[test]
fn failed_checks_are_logged_with_their_cause_by_the_checking_shard() {
    let (listen, p1, p2) = (free_port(), free_port(), free_port());
    let all = serve_until(
        &args(&[
            "--threads",
            "2",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--backend",
            &format!("wt1=127.0.0.1:{p1}"),
            "--backend",
            &format!("wt2=127.0.0.1:{p2}"),
            "--check-interval",
            "20ms",
            "--fall",
            "1",
        ]),
        |lines| lines.iter().filter(|l| l.contains("up -> down")).count() == 2,
    );
    for (shard, prefix, port) in [(0, "wt1", p1), (1, "wt2", p2)] {
        let checked = format!(
            "wtgate[{shard}]: backend {prefix} (127.0.0.1:{port}): active check failed: Connection refused"
        );
        let down = format!(
            "wtgate[{shard}]: backend {prefix} (127.0.0.1:{port}) up -> down: active checks failed: Connection refused"
        );
        assert!(all.contains(&checked), "no line '{checked}' in:\n{all}");
        assert!(all.contains(&down), "no line '{down}' in:\n{all}");
    }
}

/// A status wtgate answers itself is logged with the client, the request line (no query: it may
/// hold secrets) and the cause.
#[test]
fn a_503_of_our_own_is_logged_with_its_cause() {
    let (listen, p1) = (free_port(), free_port());
    let mut sent = false;
    let all = serve_until(
        &args(&[
            "--threads",
            "1",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--backend",
            &format!("wt1=127.0.0.1:{p1}"),
        ]),
        |lines| {
            if !sent && lines.iter().any(|l| l.contains("listening on")) {
                use std::io::{Read, Write};
                let mut c = std::net::TcpStream::connect(("127.0.0.1", listen)).unwrap();
                c.write_all(b"GET /app?secret=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut answer = String::new();
                let _ = c.read_to_string(&mut answer);
                assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
                sent = true;
            }
            lines.iter().any(|l| l.contains(" 503 to "))
        },
    );
    let want = "wtgate[0]: 503 to 127.0.0.1 for GET /app: no backend is up and ready";
    assert!(all.contains(want), "no line '{want}' in:\n{all}");
    assert!(!all.contains("secret"), "{all}");
}

/// SIGTERM while a response is on its way: no new connection is taken, an idle keep-alive client is
/// closed at once, the response in flight completes and its connection then closes (its head went
/// out before the signal, keep-alive), then wtgate exits 0.
#[test]
fn sigterm_finishes_the_response_in_flight_then_exits_0() {
    use crate::common::{Behavior, TestBackend, Wire, get};
    use std::io::{Read, Write};
    let b = TestBackend::start(
        "wt1",
        Behavior::StallMidResponse(Duration::from_millis(500)),
    );
    let listen = free_port();
    let mut wtgate = Serving::start(&args(&[
        "--threads",
        "1",
        "--no-pin",
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "--backend",
        &format!("wt1={}", b.addr),
    ]));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let mut idle = Wire::connect(addr);
    idle.write_all(&get("/?idle=1")).unwrap();
    assert_eq!(idle.read_response(false).unwrap().status, 200);

    let mut busy = std::net::TcpStream::connect(addr).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    busy.write_all(&get("/?busy=1")).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    // The head and the first 10 body bytes come at once; the other 990 after the stall.
    while !got.ends_with(b"0123456789") {
        let n = busy.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    wtgate.signal("-TERM");
    wtgate.wait_for_line("stopping:");
    idle.expect_closed()
        .expect("the idle keep-alive client is closed");
    // Up to EOF: the connection closes after the response.
    busy.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(body.len(), 1000, "{head}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting"
    );
    assert_eq!(wtgate.exit_code(), Some(0));
}

/// An open WebSocket goes on through the grace period, is closed when it ends, and wtgate exits
/// 0; a second signal stops it at once.
#[test]
fn a_tunnel_gets_the_grace_period_then_is_closed() {
    use crate::common::{Behavior, TestBackend, client_frame, ws_connect, ws_recv};
    use wtgate_demo::ws::OP_TEXT;
    let ws = Behavior::WsEcho {
        reject: false,
        close_after: None,
        greet: false,
    };
    let b = TestBackend::start("wt1", ws);
    let listen = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let spec = |grace: &str| {
        args(&[
            "--threads",
            "1",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--backend",
            &format!("wt1={}", b.addr),
            "--grace",
            grace,
        ])
    };
    let mut wtgate = Serving::start(&spec("3s"));
    let (mut w, _) = ws_connect(addr, "/app?wtd=wt1AAAAAAAAAAAAAAAA&request=ws");
    wtgate.signal("-TERM");
    wtgate.wait_for_line("stopping:");
    // Still relayed during the grace period.
    w.write_all(&client_frame(OP_TEXT, b"still there?", [9, 8, 7, 6]))
        .unwrap();
    let echo = ws_recv(&mut w).unwrap().expect("an echo");
    assert_eq!(echo.2, b"still there?");
    w.expect_closed()
        .expect("closed at the end of the grace period");
    assert_eq!(wtgate.exit_code(), Some(0));
    drop(wtgate);

    // Twice: out at once, without waiting for the tunnel's grace of an hour.
    let mut wtgate = Serving::start(&spec("1h"));
    let (_w, _) = ws_connect(addr, "/app?wtd=wt1BBBBBBBBBBBBBBBB&request=ws");
    wtgate.signal("-TERM");
    wtgate.wait_for_line("stopping:");
    wtgate.signal("-INT");
    assert_eq!(wtgate.exit_code(), Some(1));
}

/// `--user`: bound as root, served as the user (every thread); an unknown user is a config error.
#[test]
fn user_drops_root_after_binding() {
    let out = wtgate(&[
        "check",
        "--backend",
        "wt1=127.0.0.1:9090",
        "--user",
        "no-such-user-x",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--user: no user 'no-such-user-x'"),
        "{}",
        text(&out)
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: dropping privileges is not tried");
        return;
    }
    let listen = free_port();
    let wtgate = Serving::start(&args(&[
        "--threads",
        "2",
        "--no-pin",
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "--backend",
        &format!("wt1=127.0.0.1:{}", free_port()),
        "--user",
        "nobody",
    ]));
    wtgate.wait_for_line("serving as nobody");
    let tasks = format!("/proc/{}/task", wtgate.pid());
    for task in std::fs::read_dir(&tasks).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "{}: {uid}",
            task.path().display()
        );
    }
}
