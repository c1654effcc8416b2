//! The built `tandemctl` binary: help, completions, input errors and an unreachable dataplane.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn tandemctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandemctl"))
        .args(args)
        .env_remove("TANDEM_SOCKET")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_the_commands_and_the_ipvsadm_forms() {
    let o = tandemctl(&["--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for want in [
        "service",
        "server",
        "list",
        "conns",
        "stats",
        "rate",
        "zero",
        "timeout",
        "status",
        "save",
        "restore",
        "clear",
        "reload",
        "completions",
        "--socket",
        "--output",
        "tandemctl -A -t|-u VIP:PORT",
    ] {
        assert!(out.contains(want), "--help lacks {want:?}:\n{out}");
    }
    let o = tandemctl(&["server", "add", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("--masquerading"));
}

#[test]
fn completions_are_printed() {
    let o = tandemctl(&["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("_tandemctl()"), "{out}");
    assert!(out.contains("complete -F _tandemctl"), "{out}");
    for shell in ["zsh", "fish"] {
        let o = tandemctl(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0));
        assert!(!o.stdout.is_empty());
    }
}

#[test]
fn a_missing_socket_is_one_line_and_exit_1() {
    let dir = std::env::temp_dir().join(format!("tandemctl-test-{}", std::process::id()));
    let sock = dir.join("admin.sock");
    let sock = sock.to_str().unwrap();
    for args in [
        vec!["--socket", sock, "list"],
        vec!["--socket", sock, "-L", "-n"],
        vec!["--socket", sock, "-A", "-t", "203.0.113.10:80", "-s", "wrr"],
    ] {
        let o = tandemctl(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(o.stdout.is_empty(), "nothing on stdout");
        let err = text(&o.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with(&format!(
                "tandemctl: cannot reach the dataplane at {sock}: "
            )),
            "{err}"
        );
        assert!(err.contains("No such file or directory"), "{err}");
    }
    // The environment variable names the socket too.
    let o = Command::new(env!("CARGO_BIN_EXE_tandemctl"))
        .arg("status")
        .env("TANDEM_SOCKET", sock)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains(sock));
}

#[test]
fn the_default_socket_is_named_when_it_is_missing() {
    if std::path::Path::new("/run/tandem/admin.sock").exists() {
        eprintln!("skipped: a dataplane is serving /run/tandem/admin.sock here");
        return;
    }
    let o = tandemctl(&["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr)
            .starts_with("tandemctl: cannot reach the dataplane at /run/tandem/admin.sock: "),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn bad_input_is_refused_before_connecting_with_exit_2() {
    // The socket does not exist: exit 2 (not 1) proves the input was checked first.
    let cases: [(&[&str], &str); 9] = [
        (
            &["-A", "-t", "203.0.113.10:80", "-s", "wrrr"],
            "unknown scheduler `wrrr`",
        ),
        (
            &["-A", "-t", "203.0.113.10:70000"],
            "service port 70000 is out of range (1-65535)",
        ),
        (
            &["service", "add", "-t", "203.0.113.300:80"],
            "service address `203.0.113.300` is not an IPv4 address",
        ),
        (
            &[
                "-a",
                "-t",
                "203.0.113.10:80",
                "-r",
                "172.16.0.2",
                "-m",
                "-i",
            ],
            "`-m` and `-i` cannot be used together",
        ),
        (
            &[
                "server",
                "add",
                "-t",
                "203.0.113.10:80",
                "-r",
                "172.16.0.2",
                "-m",
                "-i",
            ],
            "cannot be used with",
        ),
        (
            &[
                "-a",
                "-t",
                "203.0.113.10:80",
                "-r",
                "172.16.0.2",
                "-w",
                "65536",
            ],
            "weight 65536 is out of range",
        ),
        (&["-A", "-t", "203.0.113.10:80", "-L"], "multiple commands"),
        (&["frobnicate"], "frobnicate"),
        (
            &["restore", "/nonexistent/rules"],
            "cannot read /nonexistent/rules",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["--socket", "/nonexistent/tandem.sock"];
        all.extend_from_slice(args);
        let o = tandemctl(&all);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("tandemctl: "), "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn restore_errors_from_stdin_name_the_line() {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandemctl"))
        .args(["--socket", "/nonexistent/tandem.sock", "-R"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"-A -t 203.0.113.10:80 -s wrr\n-a -t 203.0.113.10:81 -r 172.16.0.2 -m\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr),
        "tandemctl: line 2: real server for service TCP 203.0.113.10:81, which no earlier -A line defines\n"
    );
}
