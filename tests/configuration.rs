//! docs/configuration.md against the binaries: every option each binary's
//! `--help` shows (flag and environment variable) has a row in its table,
//! and every flag or variable a row names is one the binary knows, so the
//! page cannot drift from the code. Garbage in each option is refused by
//! the binaries' own tests (services/server, services/client, sessions.rs).

use std::collections::BTreeSet;
use std::process::Command;

mod common;

/// The long flags and environment variables `--help` shows.
fn help_options(role: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(common::lab()).args([role, "--help"]).output().unwrap();
    assert!(out.status.success(), "{role} --help: {out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = BTreeSet::new();
    let mut envs = BTreeSet::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        // An option's first line: `-x, --flag <V>` or `--flag <V>`.
        let option = trimmed.strip_prefix("--").or_else(|| trimmed.split_once(", --").map(|(_, rest)| rest));
        if line.starts_with("  ") && (trimmed.starts_with("--") || trimmed.starts_with('-')) {
            if let Some(rest) = option {
                let flag: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '-').collect();
                flags.insert(format!("--{flag}"));
            }
        }
        if let Some((_, rest)) = trimmed.split_once("[env: ") {
            envs.insert(rest.split('=').next().unwrap().to_owned());
        }
    }
    flags.remove("--help");
    flags.remove("--version");
    assert!(flags.len() > 10 && envs.len() > 10, "{role} --help parsed to nothing: {flags:?} {envs:?}");
    (flags, envs)
}

/// The backticked flags and variables of the first two columns of the
/// table under `## heading`.
fn documented(heading: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let page = std::fs::read_to_string(common::repo_root().join("docs/configuration.md")).unwrap();
    let section = page.split(&format!("\n## {heading}\n")).nth(1).unwrap_or_else(|| panic!("no ## {heading}"));
    let section = section.split("\n## ").next().unwrap();
    let mut flags = BTreeSet::new();
    let mut envs = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| ") && l.contains('`')) {
        let cells: Vec<&str> = row.split(" | ").collect();
        for cell in cells.iter().take(2) {
            for (i, token) in cell.split('`').enumerate() {
                if i % 2 == 0 {
                    continue;
                }
                if token.starts_with("--") {
                    flags.insert(token.to_owned());
                } else if token.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c == '*') {
                    envs.insert(token.to_owned());
                }
            }
        }
    }
    (flags, envs)
}

/// Read by the logging and tracing libraries, or (POD_IP, the address the
/// other replicas fetch a parked session from) by the server itself from
/// the pod's environment: not by the option parser.
const NOT_OPTIONS: [&str; 3] = ["RUST_LOG", "OTEL_*", "POD_IP"];

fn check(role: &str, heading: &str) {
    let (help_flags, help_envs) = help_options(role);
    let (doc_flags, mut doc_envs) = documented(heading);
    doc_envs.retain(|e| !NOT_OPTIONS.contains(&e.as_str()) && !e.starts_with("OTEL_"));
    let undocumented: Vec<_> = help_flags.difference(&doc_flags).chain(help_envs.difference(&doc_envs)).collect();
    assert!(undocumented.is_empty(), "{heading} options missing from docs/configuration.md: {undocumented:?}");
    let unknown: Vec<_> = doc_flags.difference(&help_flags).chain(doc_envs.difference(&help_envs)).collect();
    assert!(unknown.is_empty(), "docs/configuration.md names {heading} options it does not have: {unknown:?}");
}

#[test]
fn every_server_option_is_documented_and_every_documented_one_exists() {
    check("server", "gsd-server");
}

#[test]
fn every_client_option_is_documented_and_every_documented_one_exists() {
    check("client", "gsd-client");
}
